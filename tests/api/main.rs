//! Integration tests: the real server on 127.0.0.1:0 with a temporary data
//! directory, spoken to over real HTTP and WebSocket connections. One test
//! binary with a module per area keeps link times low.

mod accounts;
mod attention;
mod bots;
mod cli;
mod closing;
mod cluster_cli;
mod cluster_faults;
mod common;
mod community;
mod console;
mod durability;
mod engine;
mod external_auth;
mod faults;
mod files;
mod friends;
mod hardening;
mod invites;
mod limits;
mod moderation;
mod ops;
mod previews;
mod properties;
mod push;
mod reactions;
mod realtime;
mod rooms;
mod search;
mod soak;
mod socketio;
mod threads;
mod tls;
mod uploads;
mod web;
mod webhooks;
