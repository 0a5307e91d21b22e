//! imfree-client.
