use matroska_seaorm::{depth, Walk};

#[derive(Walk)]
struct Page {
    pages: Vec<Page>,
}

fn main() {
    let _ = depth!(Page => { pages: { writer: 1 } });
}
