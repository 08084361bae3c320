//! Where the partial credit goes: the scorer's checks one by one (`sharpen-eval shapes`), as the
//! share of the named objects whose colour is found, of those with the named shape, of the pairs
//! in the named relation, and of the images with exactly the named number of objects.

use serde::Serialize;
use shapes_world::Checks;

use sharpen_app::stats::{mean_ci, MeanCi};

/// One seed's checks, each as (passed, tried).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckTally {
    colour: (usize, usize),
    shape: (usize, usize),
    relation: (usize, usize),
    count: (usize, usize),
}

fn tick(slot: &mut (usize, usize), passed: bool) {
    slot.0 += usize::from(passed);
    slot.1 += 1;
}

impl CheckTally {
    pub fn add(&mut self, c: &Checks) {
        for found in [Some(c.first_found), c.second_found].into_iter().flatten() {
            tick(&mut self.colour, found);
        }
        for shape in [Some(c.first_shape), c.second_shape].into_iter().flatten() {
            tick(&mut self.shape, shape);
        }
        if let Some(related) = c.relation {
            tick(&mut self.relation, related);
        }
        tick(&mut self.count, c.count);
    }
}

#[derive(Debug, Serialize)]
pub struct CheckRow {
    pub check: &'static str,
    /// Objects, pairs or images per seed that the check applies to.
    pub per_seed: usize,
    /// Share passed: mean and 95% CI over seeds.
    pub passed: MeanCi,
}

/// A row per check over the seeds' tallies (every seed scores the same prompts).
pub fn rows(tallies: &[CheckTally]) -> Vec<CheckRow> {
    let row = |check: &'static str, slot: fn(&CheckTally) -> (usize, usize)| {
        let rates: Vec<f64> = tallies
            .iter()
            .map(|t| {
                let (passed, tried) = slot(t);
                passed as f64 / tried as f64
            })
            .collect();
        CheckRow {
            check,
            per_seed: tallies.first().map_or(0, |t| slot(t).1),
            passed: mean_ci(&rates),
        }
    };
    vec![
        row("colour found (objects)", |t| t.colour),
        row("shape right (objects)", |t| t.shape),
        row("relation right (pairs)", |t| t.relation),
        row("object count right (images)", |t| t.count),
    ]
}

/// The rows as a Markdown table.
pub fn markdown(rows: &[CheckRow]) -> String {
    let mut out = String::from(
        "The scorer's checks one by one, passed % (mean ± 95% CI over seeds)\n\n| check | per seed | passed % |\n|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} ± {:.1} |\n",
            r.check,
            r.per_seed,
            100.0 * r.passed.mean,
            100.0 * r.passed.ci95
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(found: bool, shape: bool, count: bool) -> Checks {
        Checks {
            first_found: found,
            first_shape: shape,
            second_found: None,
            second_shape: None,
            relation: None,
            count,
        }
    }

    fn pair(found: [bool; 2], shape: [bool; 2], relation: bool, count: bool) -> Checks {
        Checks {
            first_found: found[0],
            first_shape: shape[0],
            second_found: Some(found[1]),
            second_shape: Some(shape[1]),
            relation: Some(relation),
            count,
        }
    }

    #[test]
    fn checks_are_counted_per_object_pair_and_image() {
        // Seed 0: a right single object; a pair whose second object is missing.
        // Seed 1: a single object of the wrong shape among two blobs; a right pair.
        let seeds = [
            [
                single(true, true, true),
                pair([true, false], [true, false], false, false),
            ],
            [
                single(true, false, false),
                pair([true, true], [true, true], true, true),
            ],
        ];
        let tallies: Vec<CheckTally> = seeds
            .iter()
            .map(|images| {
                let mut t = CheckTally::default();
                images.iter().for_each(|c| t.add(c));
                t
            })
            .collect();
        assert_eq!(tallies[0].colour, (2, 3), "three objects named, two found");
        assert_eq!(tallies[0].shape, (2, 3));
        assert_eq!(tallies[0].relation, (0, 1));
        assert_eq!(tallies[0].count, (1, 2));
        assert_eq!(tallies[1].shape, (2, 3));
        let rows = rows(&tallies);
        let per_seed: Vec<usize> = rows.iter().map(|r| r.per_seed).collect();
        assert_eq!(per_seed, [3, 3, 1, 2]);
        let means: Vec<f64> = rows.iter().map(|r| r.passed.mean).collect();
        let want = [(2.0 / 3.0 + 1.0) / 2.0, 2.0 / 3.0, 0.5, 0.5];
        for (got, want) in means.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{means:?}");
        }
        // Relation 0 and 1 over two seeds: t(1) = 12.706 times the standard error 0.5.
        assert!(
            (rows[2].passed.ci95 - 12.706 * 0.5).abs() < 1e-3,
            "{:?}",
            rows[2].passed
        );
        assert_eq!(rows[1].passed.ci95, 0.0, "the same rate on both seeds");
        let table = markdown(&rows);
        assert!(
            table.contains("| relation right (pairs) | 1 | 50.0 ± 635.3 |"),
            "{table}"
        );
    }
}
