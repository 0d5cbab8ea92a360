//! The scenarios of issue 14, S1–S9: each runs on every selected backend and returns one
//! table.

mod bulk;
mod cache;
mod cli;
mod ops;
mod reads;
mod watch;

use crate::backend::Backend;
use crate::harness::{Ctx, Table};

/// Every scenario's id, in order.
pub const ALL: [&str; 9] = ["S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9"];

/// Runs scenario `id` on `backends`.
pub async fn run(id: &str, ctx: &Ctx, backends: &[Backend]) -> Table {
    match id {
        "S1" => ops::s1(ctx, backends).await,
        "S2" => ops::s2(ctx, backends).await,
        "S3" => reads::s3(ctx, backends).await,
        "S4" => reads::s4(ctx, backends).await,
        "S5" => watch::s5(ctx, backends).await,
        "S6" => bulk::s6(ctx, backends).await,
        "S7" => cli::s7(ctx, backends).await,
        "S8" => cache::s8(ctx, backends).await,
        _ => cache::s9(ctx, backends).await,
    }
}
