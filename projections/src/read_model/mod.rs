//! The `users_v1` and `factors_v1` tables: the projection that writes them and the queries
//! that read them.

mod factors;
mod users;

pub use factors::FactorRow;
pub use users::UserRow;

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{AnyConnection, any::AnyRow};
use tessera_domain::{factor::FactorEvent, user::UserEvent};

use crate::{Dialect, Error, StoredEvent, runner::Projection};

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
        dialect: Dialect,
        event: &StoredEvent,
    ) -> Result<(), Error> {
        self.apply_batch(conn, dialect, std::slice::from_ref(event))
            .await
    }

    /// Loads the rows the batch touches, folds every event into them in memory, and writes
    /// back the rows that changed: a few statements per batch instead of one per event.
    /// A single event goes the same way, so live updates and rebuilds share one code path.
    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        _backend: Dialect,
        events: &[StoredEvent],
    ) -> Result<(), Error> {
        enum Decoded<'a> {
            User(&'a StoredEvent, UserEvent),
            Factor(&'a StoredEvent, FactorEvent),
        }
        let mut decoded = Vec::with_capacity(events.len());
        for event in events {
            match event.aggregate_type.as_str() {
                "User" => decoded.push(Decoded::User(event, event.decode()?)),
                "Factor" => decoded.push(Decoded::Factor(event, event.decode()?)),
                _ => {}
            }
        }
        let mut users = Rows::<UserRow>::default();
        let mut factors = Rows::<FactorRow>::default();
        users
            .load(
                conn,
                decoded.iter().filter_map(|d| match d {
                    Decoded::User(e, _) => Some(e.aggregate_id.as_str()),
                    Decoded::Factor(..) => None,
                }),
            )
            .await?;
        factors
            .load(
                conn,
                decoded.iter().filter_map(|d| match d {
                    Decoded::Factor(e, _) => Some(e.aggregate_id.as_str()),
                    Decoded::User(..) => None,
                }),
            )
            .await?;
        for d in decoded {
            match d {
                Decoded::User(stored, event) => users::fold(&mut users, stored, event),
                Decoded::Factor(stored, event) => factors::fold(&mut factors, stored, event),
            }
        }
        users.save(conn).await?;
        factors.save(conn).await
    }
}

/// A query over the `Any` driver, for binding a row's columns.
pub(crate) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A read-model row that a batch can load, fold and write back.
pub(crate) trait Row:
    Clone + PartialEq + Send + Unpin + for<'r> sqlx::FromRow<'r, AnyRow>
{
    /// Its table.
    const TABLE: &'static str;
    /// Its columns, `id` first, in [`Row::bind`] order.
    const COLUMNS: &'static [&'static str];
    /// The primary key.
    fn id(&self) -> &str;
    /// The last stream sequence applied.
    fn last_seq(&self) -> i64;
    /// Records that `seq` was applied.
    fn set_last_seq(&mut self, seq: i64);
    /// Binds every column, in [`Row::COLUMNS`] order.
    fn bind<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q>;
}

/// Ids per `IN (..)` lookup and rows per multi-row upsert: well under both stores' limits on
/// bound parameters (SQLite 32,766; PostgreSQL 65,535).
const CHUNK: usize = 500;

/// The rows one batch touches: as loaded, and as folded.
pub(crate) struct Rows<R> {
    loaded: BTreeMap<String, R>,
    rows: BTreeMap<String, R>,
}

impl<R> Default for Rows<R> {
    fn default() -> Self {
        Self {
            loaded: BTreeMap::new(),
            rows: BTreeMap::new(),
        }
    }
}

impl<R: Row> Rows<R> {
    /// Reads the rows of `ids` (duplicates allowed) that exist.
    async fn load<'a>(
        &mut self,
        conn: &mut AnyConnection,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), Error> {
        let ids: Vec<&str> = ids.collect::<BTreeSet<_>>().into_iter().collect();
        let columns = R::COLUMNS.join(", ");
        for chunk in ids.chunks(CHUNK) {
            let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT {columns} FROM {} WHERE id IN ({})",
                R::TABLE,
                params.join(", ")
            );
            let mut query = sqlx::query_as::<_, R>(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut *conn).await? {
                self.loaded.insert(row.id().to_string(), row.clone());
                self.rows.insert(row.id().to_string(), row);
            }
        }
        Ok(())
    }

    /// The row's first event: creates it unless it exists.
    pub(crate) fn create(&mut self, row: R) {
        self.rows.entry(row.id().to_string()).or_insert(row);
    }

    /// A later event: changes an existing row that has not seen `seq` yet.
    pub(crate) fn update(&mut self, id: &str, seq: i64, change: impl FnOnce(&mut R)) {
        if let Some(row) = self.rows.get_mut(id)
            && row.last_seq() < seq
        {
            change(row);
            row.set_last_seq(seq);
        }
    }

    /// Writes back every row that is new or changed.
    async fn save(self, conn: &mut AnyConnection) -> Result<(), Error> {
        let changed: Vec<&R> = self
            .rows
            .iter()
            .filter(|(id, row)| self.loaded.get(*id) != Some(*row))
            .map(|(_, row)| row)
            .collect();
        let columns = R::COLUMNS.join(", ");
        let updates: Vec<String> = R::COLUMNS[1..]
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let width = R::COLUMNS.len();
        for chunk in changed.chunks(CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|r| {
                    let params: Vec<String> =
                        (1..=width).map(|c| format!("${}", r * width + c)).collect();
                    format!("({})", params.join(", "))
                })
                .collect();
            let sql = format!(
                "INSERT INTO {} ({columns}) VALUES {} ON CONFLICT (id) DO UPDATE SET {}",
                R::TABLE,
                values.join(", "),
                updates.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for row in chunk {
                query = row.bind(query);
            }
            query.execute(&mut *conn).await?;
        }
        Ok(())
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
