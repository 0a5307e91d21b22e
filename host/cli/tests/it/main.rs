//! Behaviour tests that drive the real `imfree` binary.
