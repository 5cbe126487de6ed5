//! The sans-IO protocol core: no sockets, files, clocks or global randomness.
//! Time and random numbers come in as arguments; effects go out as outputs.

pub mod causal;
pub mod codec;
pub mod coord;
pub mod limits;
pub mod meta;
pub mod msg;
pub mod node;
pub mod object;
pub mod quorum;
pub mod ring;
pub mod store;
pub mod table;
pub mod types;
