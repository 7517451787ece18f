//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod auth;
mod enrollment;
mod projections;
mod security;
mod verification;
