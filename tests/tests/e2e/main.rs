//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod audit;
mod auth;
mod enrollment;
mod login;
mod no_secrets;
mod oob_codes;
mod projections;
mod seal;
mod security;
mod snapshots;
mod startup;
mod step_up;
mod subscriptions;
mod tour;
mod verification;
