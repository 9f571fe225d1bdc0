//! The crate map in `src/lib.rs`, held against the code: every `crate::…` path in a source
//! file (outside its `#[cfg(test)]` modules and comments) names a module on a lower floor or
//! inside its own top-level module, and no two source files import each other in a loop.
//! Run alone with `cargo test --test api layers`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Top-level modules by floor, top first (docs/ARCHITECTURE.md). A module may use modules on
/// its own floor or below, never above.
const FLOORS: &[(u8, &[&str])] = &[
    (1, &["app", "cli"]),
    (2, &["http"]),
    (3, &["session", "doctor", "rotation", "traces"]),
    (4, &["oidc"]),
    (5, &["metrics"]),
    (6, &["config"]),
    (
        7,
        &["entra", "certificate", "federated", "expiry", "return_to"],
    ),
    (8, &["loopback", "clock", "sync", "telemetry"]),
];

fn floor(module: &str) -> Option<u8> {
    FLOORS
        .iter()
        .find(|(_, names)| names.contains(&module))
        .map(|(f, _)| *f)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/http/error.rs` → `["http", "error"]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The code of a file without comments and without its test modules (which may reach
/// anywhere: `#[cfg(test)] mod tests;` files and inline `#[cfg(test)] mod … { … }` blocks).
fn production_code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            // Skip the item that follows: up to its matching closing brace, or its `;`.
            let mut depth = 0i32;
            let mut opened = false;
            for next in lines.by_ref() {
                depth += next.matches('{').count() as i32;
                opened |= next.contains('{');
                depth -= next.matches('}').count() as i32;
                if (opened && depth <= 0) || (!opened && next.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The files this file imports: `crate::a::b` paths (also inside `use crate::{a::b, c}`)
/// resolved to the longest module path that exists, and `super::x`.
fn imports(code: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let mut found = BTreeSet::new();
    let mut resolve = |path: Vec<String>| {
        for k in (1..=path.len()).rev() {
            let candidate = path[..k].to_vec();
            if modules.contains(&candidate) {
                // A file's own ancestors (`mod.rs` declaring it) are its own room.
                if candidate != me && !me.starts_with(&candidate) {
                    found.insert(candidate);
                }
                return;
            }
        }
    };
    let words = |s: &str| -> Vec<String> {
        s.split("::")
            .map(|w| {
                w.trim()
                    .trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .to_owned()
            })
            .take_while(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
            })
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `use crate::{a::b, c::{d, e}}`: each top-level item.
            let mut depth = 0;
            let mut item = String::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        resolve(words(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 {
                    item.push(ch);
                }
            }
            resolve(words(&item));
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(after.len());
            resolve(words(&after[..end]));
        }
        rest = after;
    }
    let parent = &me[..me.len().saturating_sub(1)];
    let mut rest = code;
    while let Some(at) = rest.find("super::") {
        let after = &rest[at + "super::".len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(after.len());
        let mut path = parent.to_vec();
        path.extend(words(&after[..end]));
        resolve(path);
        rest = after;
    }
    found
}

struct House {
    /// Each source file's module path and the module paths it imports.
    arrows: BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
}

fn house() -> House {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut by_module = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        // The crate root and the binaries sit above every floor.
        if module.is_empty()
            || module == ["lib"]
            || module == ["main"]
            || module.first().is_some_and(|m| m == "bin")
        {
            continue;
        }
        // Test-only files (`tests.rs`, `proptests.rs`) are not part of the production graph.
        if module
            .last()
            .is_some_and(|m| m == "tests" || m == "proptests")
        {
            continue;
        }
        by_module.insert(module, file.clone());
    }
    let modules: BTreeSet<Vec<String>> = by_module.keys().cloned().collect();
    let arrows = by_module
        .iter()
        .map(|(module, file)| {
            let text = fs::read_to_string(file).expect("a source file");
            (
                module.clone(),
                imports(&production_code(&text), module, &modules),
            )
        })
        .collect();
    House { arrows }
}

#[test]
fn every_import_runs_down_the_crate_map() {
    let house = house();
    let mut wrong = Vec::new();
    for (from, tos) in &house.arrows {
        let Some(from_floor) = floor(&from[0]) else {
            wrong.push(format!(
                "{} is on no floor of the crate map",
                from.join("::")
            ));
            continue;
        };
        for to in tos {
            if to[0] == from[0] {
                continue;
            }
            match floor(&to[0]) {
                None => wrong.push(format!("{} is on no floor of the crate map", to.join("::"))),
                Some(f) if f < from_floor => wrong.push(format!(
                    "{} (floor {from_floor}) imports {} (floor {f}), a floor above it",
                    from.join("::"),
                    to.join("::")
                )),
                Some(_) => {}
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        house.arrows.len() > 30,
        "the walk found too few files to mean anything: {}",
        house.arrows.len()
    );
}

#[test]
fn no_source_files_import_each_other_in_a_loop() {
    let house = house();
    // Tarjan's strongly connected components over the file graph.
    struct Walk<'a> {
        arrows: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        circles: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Vec<String>) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            for w in self.arrows.get(v).into_iter().flatten() {
                let Some((w, _)) = self.arrows.get_key_value(w) else {
                    continue;
                };
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut circle = Vec::new();
                while let Some(w) = self.stack.pop() {
                    circle.push(w.join("::"));
                    if w == v {
                        break;
                    }
                }
                if circle.len() > 1 {
                    self.circles.push(circle);
                }
            }
        }
    }
    let mut walk = Walk {
        arrows: &house.arrows,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        circles: Vec::new(),
    };
    for v in house.arrows.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    assert!(
        walk.circles.is_empty(),
        "source files that import each other in a loop: {:?}",
        walk.circles
    );
}

#[test]
fn the_walk_sees_an_import_that_runs_up() {
    // The checker itself: a leaf that named the HTTP layer would be caught.
    let modules: BTreeSet<Vec<String>> = [vec!["clock".to_owned()], vec!["http".to_owned()]]
        .into_iter()
        .collect();
    let code = production_code(
        "//! a leaf\nuse crate::{http::error::AppError, clock};\n#[cfg(test)]\nmod tests {\n    use crate::config;\n}\n",
    );
    let found = imports(&code, &["clock".to_owned()], &modules);
    assert_eq!(found, [vec!["http".to_owned()]].into_iter().collect());
}
