//! imfree-relay.
