//! Meta's logic without its server: the state machine ([`state`]), its
//! replication settings ([`settings`]), the store seam ([`store`]) and one
//! input through both ([`step`]). The server, the config file and the file
//! store are the node crate's (`markab::meta`). See docs/meta.md.

pub mod balance;
pub mod leader;
pub mod settings;
pub mod state;
pub mod step;
pub mod store;
