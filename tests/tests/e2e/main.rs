//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod auth;
mod enrollment;
mod login;
mod no_secrets;
mod oob_codes;
mod projections;
mod security;
mod step_up;
mod verification;
