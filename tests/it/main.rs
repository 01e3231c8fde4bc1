//! The one integration-test binary: real Parquet and CSV files, a real HTTP
//! server on 127.0.0.1:0, and the real `engage` binary.

mod browser;
mod cli;
mod closed_loop;
mod clv;
mod common;
mod dashboard;
mod erasure;
mod golden;
mod http;
mod leakage;
mod model;
mod nightly;
mod quality;
mod scale;
mod uplift;
