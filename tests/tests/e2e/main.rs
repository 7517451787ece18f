//! End-to-end tests: one binary (one link), each test on PostgreSQL and on SQLite.

mod alerts;
mod api_keys;
mod audit;
mod auth;
mod browser;
mod enrollment;
mod graphiql;
mod hostile_input;
mod http_conventions;
mod login;
mod masking;
mod no_secrets;
mod oob_codes;
mod projections;
mod schema;
mod seal;
mod security;
mod snapshots;
mod startup;
mod step_up;
mod subscriptions;
mod tokens;
mod tour;
mod users;
mod verification;
