//! The MySQL/MariaDB protocol adapter: turnout's own handshake and
//! authentication with clients, backend authentication, and forwarding.

pub mod counters;
pub mod database;
pub mod kill;
pub mod mirror;
mod queue;
pub mod session;
pub mod shadow;

// Below the adapter, under the names its modules use.
pub use crate::wire::my_packet as packet;
pub use crate::wire::my_response as response;
// The logins the adapter checks.
pub use crate::logins::mysql as auth;

/// The MySQL adapter, as the server and the flips use it.
pub struct Mysql;

impl crate::shared::Adapter for Mysql {
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
        Box::pin(counters::catch_up(shared, from, to, apply))
    }
}
