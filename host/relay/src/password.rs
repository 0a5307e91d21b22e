//! Account password hashing with Argon2id.
//!
//! Owns the password policy (cost parameters and length limits), producing PHC strings for storage, checking a
//! password against a stored PHC string, and burning equal time for unknown accounts so that login latency does
//! not reveal which account names exist. It must not touch storage, sessions or logging of any password material:
//! the caller decides what to store and what to say to the user.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;

/// Cost parameters and length limits for account passwords.
///
/// The defaults are OWASP's recommended Argon2id settings (19 MiB, 2 passes, 1 lane): strong enough for an
/// online service and cheap enough (~30–50 ms optimised) that logins stay responsive.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordPolicy {
    /// Argon2id memory cost in KiB.
    pub memory_kib: u32,
    /// Argon2id number of passes over memory.
    pub iterations: u32,
    /// Argon2id lanes.
    pub parallelism: u32,
    /// Shortest accepted password, in characters (Unicode scalar values).
    pub min_length: usize,
    /// Longest accepted password, in characters; bounds the work an attacker can make us do per attempt.
    pub max_length: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            min_length: 8,
            max_length: 1024,
        }
    }
}

impl PasswordPolicy {
    /// Checks only the length rules, so a caller can reject a bad new password before paying for a hash.
    pub fn check_length(&self, password: &str) -> Result<(), PasswordError> {
        let length = password.chars().count();
        if length < self.min_length {
            return Err(PasswordError::TooShort {
                min: self.min_length,
            });
        }
        if length > self.max_length {
            return Err(PasswordError::TooLong {
                max: self.max_length,
            });
        }
        Ok(())
    }

    /// Builds the Argon2id hasher for this policy; fails when the parameters are outside what Argon2 allows.
    fn hasher(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None).map_err(|e| {
            PasswordError::Hash(format!(
                "invalid Argon2id parameters (memory_kib={}, iterations={}, parallelism={}): {e}; \
                 fix the password policy in the relay configuration",
                self.memory_kib, self.iterations, self.parallelism
            ))
        })?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is shorter than the policy allows.
    #[error("password is too short: use at least {min} characters")]
    TooShort {
        /// The policy's minimum length in characters.
        min: usize,
    },
    /// The password is longer than the policy allows.
    #[error("password is too long: use at most {max} characters")]
    TooLong {
        /// The policy's maximum length in characters.
        max: usize,
    },
    /// Argon2 refused the parameters or failed internally.
    #[error("password hashing failed: {0}")]
    Hash(String),
}

/// Hashes `password` with Argon2id under `policy` and a fresh random salt, returning a PHC string for storage.
///
/// The length rules are enforced here too, so no caller can store a password the policy forbids.
pub fn hash_password(password: &str, policy: &PasswordPolicy) -> Result<String, PasswordError> {
    policy.check_length(password)?;
    let hasher = policy.hasher()?;
    let salt = SaltString::generate(&mut OsRng);
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Returns whether `password` matches the stored PHC string `phc`.
///
/// The cost parameters come from the PHC string itself, so hashes made under an older policy still verify.
/// A malformed or unsupported PHC string yields `false` rather than an error: to the user it is a failed login
/// either way, and the caller should not branch on why.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Only Argon2 variants are ever stored; `Argon2::default()` reads algorithm, version and costs from `parsed`.
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Performs one Argon2id computation at `policy`'s cost and throws the result away.
///
/// Call it when a login names an account that does not exist, so the response takes as long as a wrong
/// password would and timing does not reveal which accounts exist.
pub fn burn_verify_time(policy: &PasswordPolicy) {
    // The fallback keeps the timing equaliser working even if the configured policy is invalid; in that case
    // hashing new passwords fails loudly elsewhere.
    let hasher = policy
        .hasher()
        .unwrap_or_else(|_| PasswordPolicy::default().hasher().unwrap_or_default());
    let mut output = [0u8; 32];
    // A fixed salt is fine: the output is discarded, only the work matters.
    let _ = hasher.hash_password_into(b"imfree-unknown-account", b"imfree-burn-salt", &mut output);
    std::hint::black_box(&output);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters so the tests do not spend seconds in unoptimised builds.
    fn cheap() -> PasswordPolicy {
        PasswordPolicy {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
            ..PasswordPolicy::default()
        }
    }

    #[test]
    fn defaults_are_owasp() {
        let p = PasswordPolicy::default();
        assert_eq!((p.memory_kib, p.iterations, p.parallelism), (19_456, 2, 1));
        assert_eq!((p.min_length, p.max_length), (8, 1024));
    }

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse battery", &cheap()).expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("correct horse batterx", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_differ() {
        let a = hash_password("same password", &cheap()).expect("hash");
        let b = hash_password("same password", &cheap()).expect("hash");
        assert_ne!(a, b);
    }

    #[test]
    fn default_policy_hash_verifies() {
        let phc = hash_password("a real password", &PasswordPolicy::default()).expect("hash");
        assert!(phc.contains("m=19456,t=2,p=1"));
        assert!(verify_password("a real password", &phc));
    }

    #[test]
    fn length_limits() {
        let policy = PasswordPolicy {
            min_length: 8,
            max_length: 10,
            ..cheap()
        };
        assert!(matches!(
            hash_password("short", &policy),
            Err(PasswordError::TooShort { min: 8 })
        ));
        assert!(matches!(
            hash_password("elevenchars", &policy),
            Err(PasswordError::TooLong { max: 10 })
        ));
        // Counted in characters, not bytes: eight two-byte characters are enough.
        assert!(hash_password("éééééééé", &policy).is_ok());
    }

    #[test]
    fn malformed_phc_is_false() {
        for phc in [
            "",
            "garbage",
            "$argon2id$",
            "$argon2id$v=19$m=64,t=1,p=1$!!!$???",
            "$md5$abc",
        ] {
            assert!(!verify_password("password", phc), "{phc}");
        }
    }

    #[test]
    fn invalid_parameters_are_an_error() {
        let policy = PasswordPolicy {
            memory_kib: 1,
            ..cheap()
        };
        assert!(matches!(
            hash_password("long enough", &policy),
            Err(PasswordError::Hash(_))
        ));
        // Must not panic even with parameters Argon2 rejects.
        burn_verify_time(&policy);
    }

    #[test]
    fn burn_runs() {
        burn_verify_time(&cheap());
    }

    #[test]
    fn policy_serde_defaults_and_unknown_fields() {
        let p: PasswordPolicy = serde_json::from_str(r#"{"min_length": 12}"#).expect("parse");
        assert_eq!(p.min_length, 12);
        assert_eq!(p.memory_kib, 19_456);
        assert!(serde_json::from_str::<PasswordPolicy>(r#"{"min_lenght": 12}"#).is_err());
    }
}
