//! The PostgreSQL protocol adapter.

pub mod auth;
pub mod mirror;
pub mod pump;
pub mod sequences;
pub mod session;
pub mod shadow;
pub mod startup;

// Below the adapter, under the names its modules use.
pub use crate::backend::pg as backend;
pub use crate::wire::pg as codec;
pub use crate::wire::pg_framed as framed;

// The logins the adapter checks, under the name its modules use.
pub use crate::logins::scram;

/// The PostgreSQL adapter, as the server and the flips use it.
pub struct Postgres;

impl crate::shared::Adapter for Postgres {
    fn serve(
        &self,
        shared: std::sync::Arc<crate::shared::Shared>,
        client: crate::stream::Stream,
        peer: String,
        over_limit: bool,
    ) -> crate::shared::Boxed<'static, ()> {
        Box::pin(session::serve(shared, client, peer, over_limit))
    }

    fn catch_up<'a>(
        &self,
        shared: &'a crate::shared::Shared,
        from: turnout_control::Side,
        to: turnout_control::Side,
        apply: crate::backend::catch_up::Apply,
    ) -> crate::shared::Boxed<'a, Result<crate::backend::catch_up::CatchUp, String>> {
        Box::pin(sequences::catch_up(shared, from, to, apply))
    }
}
