//! Integration tests of imfree-crypto: known-answer tests of the primitives, imfree's own construction vectors
//! (tests/vectors/*.json, documented in docs/crypto.md), and randomised two-party session interaction.

mod kat;
mod sessions;
mod support;
mod vectors;
mod safety;
mod vector_file;
mod keystore;
mod membership;
mod group;
mod linking;
mod revocation;
mod corpus;
mod file;
