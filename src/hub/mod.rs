//! The hub: every stream, its actor, its producers and its fan-out. One
//! task per stream (the stream actor) owns all of that stream's state.
//!
//! Everything else talks to it through [`Msg`](actor::Msg)s: a viewer
//! joins or leaves, a producer ended, the fan-out saw its first keyframe,
//! the API wants a snapshot. The actor never awaits a child, a socket or a
//! peer, so it always answers, and every state it can be in has a
//! deadline:
//!
//! ```text
//! Idle ──join──> Starting ──first keyframe──> Running ──last viewer + linger──> Stopping ──all reaped──> Idle
//!                   │ start_timeout: waiters get the stderr tail, stop          │ stop deadline: abandon, Idle
//! ```
//!
//! A viewer who joins while Stopping waits for the stop to finish and then
//! starts everything afresh (SRS marked a stream publishable before teardown
//! finished; we never do). Producers carry a
//! [`Generation`](fanout::Generation), so a late "ended" from an old run
//! can never tear down its replacement.
//!
//! The rooms:
//! - `error.rs`: [`StreamError`], why a viewer or publisher was refused;
//! - `handle.rs`: what others hold, [`Stream`], [`Viewer`], [`Publisher`],
//!   and what they ask and are told ([`JoinRequest`], [`StreamInfo`]);
//! - `registry.rs`: every stream, the hidden transcodes, `reconcile`;
//! - `actor.rs`: the state machine above; `actor/slots.rs` the sources'
//!   producers, `actor/publish.rs` the publisher slot, `actor/info.rs` the
//!   API's snapshot;
//! - `producer.rs`: one producer run and its stdout demux;
//! - `tokens.rs`: the tokens of our own `ffmpeg:STREAM` readers;
//! - `fanout.rs`: the track table, the GOP cache, the ring, each viewer's
//!   selector;
//! - `testing.rs` (tests only): a publish-only stream with a viewer, for
//!   other modules' unit tests (the pump's).

mod actor;
mod error;
pub mod fanout;
mod handle;
mod producer;
mod registry;
mod tokens;

pub use actor::SETTLE_GRACE;
pub use error::{SourceFailure, StreamError};
pub use handle::{ConsumerInfo, JoinRequest, ProducerInfo, Publisher, Stream, StreamInfo, Viewer};
pub use registry::{check_name, Deps, Registry, MAX_NAME};
pub use tokens::{InternalTokens, TokenGuard};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
