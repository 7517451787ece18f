//! Command latency: how long each root mutation field takes, into
//! `tessera_command_duration_seconds{command}`.

use std::{sync::Arc, time::Instant};

use async_graphql::{
    ServerResult, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextResolve, ResolveInfo},
};

use crate::state::AppState;

/// The extension timing root mutation fields.
pub struct CommandTiming;

impl ExtensionFactory for CommandTiming {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CommandTiming)
    }
}

#[async_trait::async_trait]
impl Extension for CommandTiming {
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        if info.parent_type != "Mutation" {
            return next.run(ctx, info).await;
        }
        let name = info.name;
        let started = Instant::now();
        let result = next.run(ctx, info).await;
        if let Ok(state) = ctx.data::<AppState>() {
            state.metrics.command(name, started.elapsed().as_secs_f64());
        }
        result
    }
}
