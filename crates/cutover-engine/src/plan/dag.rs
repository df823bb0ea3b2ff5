//! Dependency layers: 0 for services without dependencies, else one more than the deepest
//! dependency. Configuration validation already rejected unknown names and cycles.

use std::collections::HashMap;

/// Layers for `services` given as `(name, depends_on)`. A name missing from the map (which
/// validation prevents) counts as layer 0; a cycle (likewise prevented) stops at depth
/// `services.len()` instead of looping.
pub fn layers<'a>(services: &[(&'a str, &'a [String])]) -> HashMap<&'a str, usize> {
    let deps: HashMap<&str, &[String]> = services.iter().copied().collect();
    let mut memo: HashMap<&'a str, usize> = HashMap::new();
    for (name, _) in services {
        layer_of(name, &deps, &mut memo, services.len());
    }
    memo
}

fn layer_of<'a>(
    name: &'a str,
    deps: &HashMap<&str, &'a [String]>,
    memo: &mut HashMap<&'a str, usize>,
    budget: usize,
) -> usize {
    if let Some(l) = memo.get(name) {
        return *l;
    }
    let layer = match deps.get(name) {
        Some(ds) if !ds.is_empty() && budget > 0 => {
            1 + ds
                .iter()
                .map(|d| layer_of(d.as_str(), deps, memo, budget - 1))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    };
    memo.insert(name, layer);
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_follow_longest_chain() {
        let none: Vec<String> = vec![];
        let a_dep = ["a".to_string()];
        let ab = ["a".to_string(), "b".to_string()];
        let svcs = [
            ("a", &none[..]),
            ("b", &a_dep[..]),
            ("c", &ab[..]),
            ("d", &none[..]),
        ];
        let l = layers(&svcs);
        assert_eq!(l["a"], 0);
        assert_eq!(l["b"], 1);
        assert_eq!(l["c"], 2);
        assert_eq!(l["d"], 0);
    }
}
