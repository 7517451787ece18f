//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod audit;
mod auth;
mod enrollment;
mod projections;
mod seal;
mod security;
mod snapshots;
mod subscriptions;
mod verification;
