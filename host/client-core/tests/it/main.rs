//! The client core driven without a network: parties with in-memory stores, and a key directory that plays the
//! relay's key service (honest, or rewriting what it serves). The same code runs in the native engine against the
//! real relay (host/cli/tests/it/e2e.rs and the others) and, later, in the browser.

mod groups;
mod pairwise;
mod relay;
