//! Running the box: `doctor` (is this installation fit to run, and what to fix if not) and
//! `backup` / `restore` of the data directory.
//!
//! What it may not do: print or return patient data. The checks look at files, keys, sockets
//! and clocks, never at records; backup and restore move encrypted files and report counts.

pub mod backup;
pub mod doctor;
