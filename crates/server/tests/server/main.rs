//! The server's integration tests, one binary (one link, one process to schedule), a module
//! per concern. They drive the built `udsecho-server` through the harness, except
//! `arbitrary_input`, which runs the library in-process.

mod arbitrary_input;
mod busy_poll;
mod cli;
mod datagram_senders;
mod descriptors;
mod echo;
mod faults;
mod faults_datagram;
mod hostile_neighbours;
mod hostile_peers;
mod logging_and_signals;
mod memory;
mod once;
mod pid_namespaces;
mod proxy;
mod proxy_faults;
mod shutdown_and_limits;
mod socket_file;
mod socket_types;
mod threads;
