//! The control plane: the migration phase, the routing state derived from it, and
//! (in later steps) the admin socket, flag file, guards and metrics.

pub mod command;
pub mod controller;
pub mod divergence;
pub mod files;
pub mod readdiff;
mod routing;
pub mod state;

pub use routing::{Phase, PhaseParseError, Routing, RoutingState, Side};
