//! `depends_on`: every name is a declared service, no service depends on itself, no cycles.

use std::collections::HashMap;
use std::ops::Range;

use crate::error::Diag;
use crate::model::ServiceDecl;

use super::{Ctx, suggest};

/// Checks the dependency graph of `services`; `spans` holds each (service, dependency) entry.
pub(crate) fn check(
    cx: &mut Ctx<'_>,
    services: &[ServiceDecl],
    spans: &HashMap<(String, String), Range<usize>>,
) {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); services.len()];
    for (i, s) in services.iter().enumerate() {
        for dep in &s.depends_on {
            let span = spans.get(&(s.name.clone(), dep.clone())).cloned();
            if *dep == s.name {
                cx.err(
                    Diag::new(span, format!("service `{}` depends on itself", s.name))
                        .help(format!("remove \"{dep}\" from its depends_on")),
                );
            } else if let Some(j) = index.get(dep.as_str()) {
                edges[i].push(*j);
            } else {
                let others = names.iter().copied().filter(|n| *n != s.name);
                let help = match suggest(dep, others) {
                    Some(c) => format!("did you mean `{c}`? services: {}", names.join(", ")),
                    None => format!("declared services: {}", names.join(", ")),
                };
                cx.err(
                    Diag::new(span, format!("`depends_on`: unknown service `{dep}`")).help(help),
                );
            }
        }
    }
    // The search recurses once per service on a path; beyond this many services (no real
    // project) skip it rather than risk the stack.
    if services.len() > 2_000 {
        return;
    }
    for cycle in cycles(&edges) {
        let (Some(&first), Some(&second)) = (cycle.first(), cycle.get(1).or(cycle.first())) else {
            continue;
        };
        let mut path: Vec<&str> = cycle.iter().map(|&i| names[i]).collect();
        path.push(names[first]);
        let span = spans
            .get(&(names[first].to_string(), names[second].to_string()))
            .cloned();
        cx.err(
            Diag::new(span, format!("dependency cycle: {}", path.join(" → ")))
                .help("a service cannot wait for itself; remove one of these depends_on entries"),
        );
    }
}

/// Every elementary cycle found by a depth-first search, each once, rotated to start at its
/// first-declared service.
pub(crate) fn cycles(edges: &[Vec<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    fn visit(
        n: usize,
        edges: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
    ) {
        marks[n] = Mark::OnStack;
        stack.push(n);
        for &m in &edges[n] {
            match marks[m] {
                Mark::New => visit(m, edges, marks, stack, found),
                Mark::OnStack => {
                    if let Some(pos) = stack.iter().position(|&x| x == m) {
                        let mut cycle = stack[pos..].to_vec();
                        if let Some(min_at) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, v)| **v)
                            .map(|(i, _)| i)
                        {
                            cycle.rotate_left(min_at);
                        }
                        if !found.contains(&cycle) {
                            found.push(cycle);
                        }
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[n] = Mark::Done;
    }
    let mut marks = vec![Mark::New; edges.len()];
    let mut found = Vec::new();
    for n in 0..edges.len() {
        if marks[n] == Mark::New {
            visit(n, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_two_cycle_once() {
        assert_eq!(cycles(&[vec![1], vec![0]]), vec![vec![0, 1]]);
    }

    #[test]
    fn finds_a_long_cycle_rotated_to_the_first_service() {
        // 0 → 1 → 2 → 0, plus 3 → 0 outside the cycle.
        assert_eq!(
            cycles(&[vec![1], vec![2], vec![0], vec![0]]),
            vec![vec![0, 1, 2]]
        );
    }

    #[test]
    fn a_dag_has_none() {
        assert!(cycles(&[vec![1, 2], vec![2], vec![]]).is_empty());
    }
}
