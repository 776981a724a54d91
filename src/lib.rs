//! Gatekeeper: a home internet gateway in one program. See DESIGN.md for the layout; each folder is a subsystem.

pub mod app;
pub mod bytes;
pub mod capture;
pub mod config;
pub mod counters;
pub mod datapath;
pub mod dhcp;
pub mod dns;
pub mod hosts;
pub mod lab;
mod labels;
pub mod logging;
pub mod nat;
pub mod net;
pub mod ports;
pub mod service;
pub mod state;
pub mod thread;
pub mod traffic;
pub mod types;
pub mod views;
pub mod web;
