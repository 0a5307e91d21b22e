pub mod oidc;
pub mod policy;
