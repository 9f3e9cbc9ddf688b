//! Integration tests: one binary, a module per area. Every test starts real servers on
//! 127.0.0.1 (an in-process origin and a Shoal node on ephemeral ports) and talks HTTP over TCP.

mod basics;
mod caching;
mod cluster;
mod collapsing;
mod crash;
mod ctl;
mod dashboard;
mod disk;
mod files;
mod geoip;
mod hostile;
mod hostile_h2;
mod joints;
mod limits;
mod origin_client;
mod process;
mod ranges;
mod reload;
mod reproxy;
mod router;
mod s3;
mod shutdown;
mod signed;
mod slices;
mod strict;
mod support;
mod tls;
mod uploads;
mod upstreams;
