//! A blog served through matroska (core-only form; the SeaORM form replaces it).
//!
//! `cargo run --example blog`
//!
//! An in-process table of articles stands in for the database. Reads go through
//! `get_or_load`; writes invalidate with scopes. Every read after a write is
//! compared with the table; the program exits non-zero on any difference.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use matroska::{params, Cache, Dep, Error, MemoryBackend, Mode, Scopes};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Article {
    id: u64,
    title: String,
    category: String,
    published: bool,
    views: u64,
}

type Db = Arc<RwLock<BTreeMap<u64, Article>>>;
const TTL: Duration = Duration::from_secs(300);

fn scopes() -> Scopes<Article> {
    Scopes::new("article", Mode::Development).describes(["published", "category"], |a: &Article| {
        Some(params! { "published" => a.published, "category" => &a.category })
    })
}

async fn list(cache: &Cache, db: &Db, category: &str) -> Result<Vec<Article>, Error> {
    let before = cache.stats().loads;
    let (db, category_owned) = (db.clone(), category.to_owned());
    let rows = cache
        .get_or_load(&format!("articles:{category}"), TTL, |deps| async move {
            let rows: Vec<Article> =
                db.read().unwrap().values().filter(|a| a.published && a.category == category_owned).cloned().collect();
            deps.extend(rows.iter().map(|a| Dep::id("article", a.id)));
            deps.extend(scopes().condition(params! { "published" => true, "category" => &category_owned })?);
            Ok::<_, Error>(rows)
        })
        .await?;
    let mark = if cache.stats().loads > before { "miss" } else { "hit " };
    println!("  read  {mark} articles:{category:<8} -> {:?}", rows.iter().map(|a| a.id).collect::<Vec<_>>());
    Ok(rows)
}

async fn update(cache: &Cache, db: &Db, id: u64, f: impl FnOnce(&mut Article), modified: &[&str]) -> Result<(), Error> {
    let (old, new) = {
        let mut table = db.write().unwrap();
        let row = table.get_mut(&id).expect("seeded row");
        let old = row.clone();
        f(row);
        (old, row.clone())
    };
    let mut deps = vec![Dep::id("article", id)];
    deps.extend(scopes().change_dependencies(&old, &new, modified)?);
    let dropped = cache.invalidate(deps).await?;
    println!("  write article {id}: {modified:?} changed, {dropped} entries invalidated");
    Ok(())
}

async fn check(cache: &Cache, db: &Db, categories: &[&str]) -> Result<bool, Error> {
    let mut ok = true;
    for c in categories {
        let cached = list(cache, db, c).await?;
        let truth: Vec<Article> = db.read().unwrap().values().filter(|a| a.published && a.category == *c).cloned().collect();
        if cached != truth {
            println!("  STALE: articles:{c}");
            ok = false;
        }
    }
    Ok(ok)
}

#[tokio::main]
async fn main() -> Result<ExitCode, Error> {
    let cache = Cache::builder().backend(MemoryBackend::new()).prefix("blog").build();
    let db: Db = Arc::default();
    for (id, cat) in [(1, "python"), (2, "python"), (3, "rust"), (4, "go")] {
        let a = Article { id, title: format!("Article {id}"), category: cat.into(), published: true, views: 0 };
        db.write().unwrap().insert(id, a);
    }
    let cats = ["python", "rust", "go"];
    println!("first reads");
    let mut ok = check(&cache, &db, &cats).await?;
    println!("second reads");
    ok &= check(&cache, &db, &cats).await?;
    println!("move article 2 from python to rust");
    update(&cache, &db, 2, |a| a.category = "rust".into(), &["category"]).await?;
    ok &= check(&cache, &db, &cats).await?;
    println!("count a view of article 3 (no list changes)");
    update(&cache, &db, 3, |a| a.views += 1, &["views"]).await?;
    ok &= check(&cache, &db, &cats).await?;
    let s = cache.stats();
    println!("stats: hits={} misses={} loads={} puts={} invalidations={} entries_invalidated={}", s.hits, s.misses, s.loads, s.puts, s.invalidations, s.entries_invalidated);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
