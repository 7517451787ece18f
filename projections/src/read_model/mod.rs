//! The `users_v1` and `factors_v1` tables: the projection that writes them and the queries
//! that read them.

mod factors;
mod users;

pub use factors::FactorRow;
pub use users::UserRow;

use sqlx::AnyConnection;
use tessera_domain::{factor::FactorEvent, user::UserEvent};

use crate::{Backend, Error, StoredEvent, runner::Projection};

/// Users and factors, one checkpoint for both.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadModels;

impl Projection for ReadModels {
    fn name(&self) -> &'static str {
        "read_models_v1"
    }

    fn tables(&self) -> &'static [&'static str] {
        &["users_v1", "factors_v1"]
    }

    async fn apply(
        &self,
        conn: &mut AnyConnection,
        _backend: Backend,
        event: &StoredEvent,
    ) -> Result<(), Error> {
        match event.aggregate_type.as_str() {
            "User" => users::apply(conn, event, event.decode::<UserEvent>()?).await,
            "Factor" => factors::apply(conn, event, event.decode::<FactorEvent>()?).await,
            _ => Ok(()),
        }
    }
}

/// Read access to the tables.
#[derive(Clone, Debug)]
pub struct Queries {
    db: crate::Db,
}

impl Queries {
    /// Queries over `db`.
    pub fn new(db: crate::Db) -> Self {
        Self { db }
    }

    pub(crate) fn pool(&self) -> &sqlx::AnyPool {
        &self.db.pool
    }
}
