//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod audit;
mod auth;
mod enrollment;
mod hostile_input;
mod login;
mod no_secrets;
mod oob_codes;
mod projections;
mod seal;
mod security;
mod snapshots;
mod step_up;
mod subscriptions;
mod verification;
