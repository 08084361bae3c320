//! Paired differences between compared methods. Every model is evaluated on the same prompts
//! and noise seeds, so a method's score minus a reference's on the same seed cancels what the
//! seed does to both; the interval of those differences is much tighter than the two methods'
//! own intervals side by side.

use serde::{Deserialize, Serialize};

use crate::shapes::Tally;
use sharpen_app::stats::{mean_ci, MeanCi};

/// One method's best-of-1 tallies: `[model][evaluation seed]`.
pub struct Scored<'a> {
    pub name: &'a str,
    pub tallies: Vec<Vec<Tally>>,
}

/// A method minus a reference, over paired (model, seed) repeats.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Difference {
    pub method: String,
    pub reference: String,
    /// How models were paired: `"one reference model"` (every model against it), `"one model,
    /// every reference model"`, or `"by training seed"` (model k against the reference's k).
    pub pairing: String,
    pub repeats: usize,
    pub all_correct: MeanCi,
    pub reward: MeanCi,
}

/// Every method against each reference (in `references`' order; the reference itself and the
/// references before it left out). One model on either side is paired with every model of the
/// other; as many models on both sides, model by model (the same training seed); otherwise the
/// pair is skipped and named in the second list. Evaluation seeds pair by index.
pub fn differences(
    methods: &[Scored<'_>],
    references: &[String],
) -> (Vec<Difference>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (j, reference) in references.iter().enumerate() {
        let Some(r) = methods.iter().find(|m| m.name == reference) else {
            continue;
        };
        // A reference listed earlier was already paired with this one.
        let earlier = &references[..j];
        for m in methods
            .iter()
            .filter(|m| m.name != reference && !earlier.iter().any(|e| e == m.name))
        {
            let (pairing, pairs): (&str, Vec<(usize, usize)>) =
                match (m.tallies.len(), r.tallies.len()) {
                    (n, 1) => ("one reference model", (0..n).map(|k| (k, 0)).collect()),
                    (1, n) => (
                        "one model, every reference model",
                        (0..n).map(|k| (0, k)).collect(),
                    ),
                    (a, b) if a == b => ("by training seed", (0..a).map(|k| (k, k)).collect()),
                    (a, b) => {
                        skipped.push(format!("{} vs {reference}: {a} models against {b}", m.name));
                        continue;
                    }
                };
            let mut correct = Vec::new();
            let mut reward = Vec::new();
            for (mk, rk) in pairs {
                for (t, rt) in m.tallies[mk].iter().zip(&r.tallies[rk]) {
                    let (a, b) = (t.rates(None), rt.rates(None));
                    correct.push(a.0 - b.0);
                    reward.push(a.1 - b.1);
                }
            }
            out.push(Difference {
                method: m.name.to_string(),
                reference: reference.clone(),
                pairing: pairing.to_string(),
                repeats: reward.len(),
                all_correct: mean_ci(&correct),
                reward: mean_ci(&reward),
            });
        }
    }
    (out, skipped)
}

/// Whether a difference's interval excludes 0, and which way.
fn resolved(m: MeanCi) -> &'static str {
    if m.n < 2 || m.mean.abs() <= m.ci95 {
        "no"
    } else if m.mean > 0.0 {
        "higher"
    } else {
        "lower"
    }
}

/// The Markdown table of the differences, in percentage points.
pub fn markdown(diffs: &[Difference], skipped: &[String]) -> String {
    if diffs.is_empty() && skipped.is_empty() {
        return String::new();
    }
    let pp = |m: MeanCi| format!("{:+.1} ± {:.1}", 100.0 * m.mean, 100.0 * m.ci95);
    let mut out = String::from(
        "\nPaired differences at best of 1 (method minus reference on the same prompts and noise \
         seeds; percentage points, mean ± 95% CI over the pairs; an interval that excludes 0 is \
         a difference these seeds resolve)\n\n| method | reference | pairing | pairs | all-correct | reward | reward resolved |\n|---|---|---|---|---|---|---|\n",
    );
    for d in diffs {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            d.method,
            d.reference,
            d.pairing,
            d.repeats,
            pp(d.all_correct),
            pp(d.reward),
            resolved(d.reward)
        ));
    }
    for s in skipped {
        out.push_str(&format!("\nNot paired: {s}.\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use shapes_world::ShapesScore;

    /// A seed's tally of single-object images with these partial credits (1.0 = all correct).
    fn tally(partials: &[f64]) -> Tally {
        let mut t = Tally::default();
        for &partial in partials {
            t.add(
                false,
                ShapesScore {
                    partial,
                    all_correct: partial == 1.0,
                },
            );
        }
        t
    }

    #[test]
    fn differences_pair_seeds_and_models() {
        let base = Scored {
            name: "base",
            tallies: vec![vec![tally(&[0.5, 1.0]), tally(&[0.0, 0.5])]],
        };
        // Two models (training seeds) x two evaluation seeds.
        let standard = Scored {
            name: "standard",
            tallies: vec![
                vec![tally(&[1.0, 1.0]), tally(&[0.0, 1.0])],
                vec![tally(&[0.5, 0.5]), tally(&[0.5, 0.5])],
            ],
        };
        let sft = Scored {
            name: "sft",
            tallies: vec![
                vec![tally(&[1.0, 1.0]), tally(&[1.0, 1.0])],
                vec![tally(&[0.5, 1.0]), tally(&[0.5, 0.5])],
            ],
        };
        let odd = Scored {
            name: "odd",
            tallies: vec![vec![tally(&[1.0])]; 3],
        };
        let single = Scored {
            name: "single",
            tallies: vec![vec![tally(&[1.0]), tally(&[0.0])]],
        };
        let methods = [base, standard, sft, odd, single];
        let (diffs, skipped) = differences(&methods, &["base".to_string(), "standard".to_string()]);
        let find = |m: &str, r: &str| {
            diffs
                .iter()
                .find(|d| d.method == m && d.reference == r)
                .unwrap()
        };
        // sft - base (base 0.75 on seed 0, 0.25 on seed 1): 1 - 0.75, 1 - 0.25, 0.75 - 0.75, 0.5 - 0.25.
        let d = find("sft", "base");
        assert_eq!((d.pairing.as_str(), d.repeats), ("one reference model", 4));
        assert!((d.reward.mean - (0.25 + 0.0 + 0.75 + 0.25) / 4.0).abs() < 1e-12);
        // All-correct: sft 1, 1, 0.5, 0 against base 0.5, 0, 0.5, 0.
        assert!((d.all_correct.mean - (0.5 + 0.0 + 1.0 + 0.0) / 4.0).abs() < 1e-12);
        // sft - standard model by model: 1 - 1, 1 - 0.5, 0.75 - 0.5, 0.5 - 0.5.
        let d = find("sft", "standard");
        assert_eq!((d.pairing.as_str(), d.repeats), ("by training seed", 4));
        assert!((d.reward.mean - (0.0 + 0.5 + 0.25 + 0.0) / 4.0).abs() < 1e-12);
        // A method against itself is not listed; 3 models against 2 cannot be paired.
        assert!(diffs.iter().all(|d| d.method != d.reference));
        assert_eq!(skipped, ["odd vs standard: 3 models against 2"]);
        assert_eq!(find("odd", "base").repeats, 3, "one seed each");
        assert!(
            !diffs
                .iter()
                .any(|d| d.method == "base" && d.reference == "standard"),
            "an earlier reference is not paired again"
        );
        // One model against both standard models: 1 - 1, 0 - 0.5, 1 - 0.5, 0 - 0.5.
        let d = find("single", "standard");
        assert_eq!(d.pairing, "one model, every reference model");
        assert_eq!(d.repeats, 4);
        assert!((d.reward.mean - (0.0 - 0.5 + 0.5 - 0.5) / 4.0).abs() < 1e-12);
        let table = markdown(&diffs, &skipped);
        assert!(
            table.contains(
                "| sft | standard | by training seed | 4 | +25.0 ± 45.9 | +18.8 ± 38.1 | no |"
            ),
            "{table}"
        );
        assert!(table.contains("Not paired: odd vs standard"), "{table}");
        let ci = |mean: f64, ci95: f64| MeanCi { mean, ci95, n: 3 };
        assert_eq!(resolved(ci(0.02, 0.01)), "higher");
        assert_eq!(resolved(ci(-0.02, 0.01)), "lower");
        assert_eq!(resolved(ci(0.02, 0.03)), "no");
        assert_eq!(
            resolved(MeanCi {
                n: 1,
                ..ci(0.02, 0.0)
            }),
            "no",
            "one pair resolves nothing"
        );
        // An unknown reference pairs nothing.
        assert!(differences(&methods, &["nobody".to_string()]).0.is_empty());
    }
}
