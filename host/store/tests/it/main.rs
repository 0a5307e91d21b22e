//! Behaviour of the relay store, each test run against SQLite and PostgreSQL (see `harness`).

mod accounts;
mod audit;
mod files;
mod fixtures;
mod groups;
mod harness;
mod identities;
mod keys;
mod plugin_kv;
mod queues;
mod social;
