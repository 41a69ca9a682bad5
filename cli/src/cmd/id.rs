//! `commons id init` and `commons id show`: the keys of a home.

use serde::Serialize;

use crate::ctx::{Ctx, note};
use crate::error::Result;

#[derive(Serialize)]
struct IdView {
    home: String,
    name: Option<String>,
    author: String,
    node: String,
}

fn view(ctx: &Ctx, id: &commons_store::home::Identity) -> IdView {
    IdView {
        home: ctx.home.root().display().to_string(),
        name: id.name.clone(),
        author: id.author.public().to_string(),
        node: id.node.public().to_string(),
    }
}

fn text(v: &IdView) -> String {
    format!(
        "name:   {}\nauthor: {}\nnode:   {}\nhome:   {}",
        v.name.as_deref().unwrap_or("(none)"),
        v.author,
        v.node,
        v.home
    )
}

/// Creates the keys; refuses to overwrite.
pub fn init(ctx: &Ctx, name: Option<&str>) -> Result<()> {
    let id = ctx.home.init_identity(name)?;
    let v = view(ctx, &id);
    if !ctx.json {
        note("Created a new identity. The author key signs your records; keep the home safe.");
    }
    ctx.emit(&v, || text(&v))
}

/// Prints the keys.
pub fn show(ctx: &Ctx) -> Result<()> {
    let id = ctx.identity()?;
    let v = view(ctx, &id);
    ctx.emit(&v, || text(&v))
}
