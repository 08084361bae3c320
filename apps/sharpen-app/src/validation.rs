//! How far a run moved its validation reward: the last validation's scores minus the first's, on
//! the same prompts and noise seeds. Each seed is one repeat (its prompts averaged), so the
//! interval is over seeds, as `sharpen-eval` reports; pairing cancels what a seed does to both.

use std::fmt;
use std::path::Path;

use crate::stats::{mean_ci, MeanCi};
use anyhow::Context;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Change {
    pub from_step: usize,
    pub to_step: usize,
    pub first: f64,
    pub last: f64,
    /// Last minus first, per seed.
    pub change: MeanCi,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = verdict(&self.change, ["a resolved rise", "a resolved fall"]);
        write!(
            f,
            "validation reward {:.3} at step {} -> {:.3} at step {}: paired change {:+.3} ± {:.3} (95% CI over {} seeds; {verdict})",
            self.first, self.from_step, self.last, self.to_step, self.change.mean, self.change.ci95, self.change.n
        )
    }
}

/// What an interval over seeds says of its mean: `resolved[0]` above zero, `resolved[1]` below,
/// or "within the seeds' noise". Two seeds whose differences happen to be equal give an interval
/// of zero width, so no verdict comes from fewer than three.
pub fn verdict<'a>(m: &MeanCi, resolved: [&'a str; 2]) -> &'a str {
    match m.mean.abs() > m.ci95 {
        _ if m.n < 3 => "too few seeds to judge",
        true if m.mean > 0.0 => resolved[0],
        true => resolved[1],
        false => "within the seeds' noise",
    }
}

/// One line of `validation.jsonl`: the scores of the fixed validation samples at `step`,
/// seed-major rows of one score per prompt. JSON has no NaN (a reward's NaN is written as
/// `null`), so `null` reads back as NaN.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Validation {
    pub step: usize,
    #[serde(deserialize_with = "nan_if_null")]
    pub reward_mean: f64,
    #[serde(deserialize_with = "nans_if_null")]
    pub scores: Vec<f64>,
}

impl Validation {
    /// The mean of the scores (a NaN score makes it NaN, as in `reward_mean`).
    pub fn mean(&self) -> f64 {
        self.scores.iter().sum::<f64>() / self.scores.len() as f64
    }

    /// The validation of `scores` at `step`, with their mean.
    pub fn new(step: usize, scores: Vec<f64>) -> Self {
        let mut v = Self {
            step,
            reward_mean: f64::NAN,
            scores,
        };
        v.reward_mean = v.mean();
        v
    }
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v: Option<f64> = serde::Deserialize::deserialize(d)?;
    Ok(v.unwrap_or(f64::NAN))
}

fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v: Vec<Option<f64>> = serde::Deserialize::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// The validations in `path` (validation.jsonl), in file order; a missing file has none. A line
/// that is not a validation is an error naming the file and the line.
pub fn read(path: &Path) -> anyhow::Result<Vec<Validation>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{} line {}: not a validation", path.display(), i + 1))
        })
        .collect()
}

/// `to` minus `from`, seed by seed: both validations hold the same whole number of seed-major rows
/// of `prompts` scores, and each row (one seed, its prompts averaged) is one repeat. The scores
/// may come from two steps of one run or from two runs validated on the same prompts and seeds.
pub fn paired(from: &Validation, to: &Validation, prompts: usize) -> anyhow::Result<MeanCi> {
    let n = from.scores.len();
    if prompts == 0 || n == 0 || !n.is_multiple_of(prompts) || to.scores.len() != n {
        anyhow::bail!(
            "{} and {} scores, not the same whole number of rows of {prompts} prompts",
            n,
            to.scores.len()
        );
    }
    let per_seed: Vec<f64> = from
        .scores
        .chunks(prompts)
        .zip(to.scores.chunks(prompts))
        .map(|(a, b)| b.iter().zip(a).map(|(b, a)| b - a).sum::<f64>() / prompts as f64)
        .collect();
    Ok(mean_ci(&per_seed))
}

/// The change between the first and the last of `rows` (rows of `prompts` scores). `None` with
/// fewer than two validations.
pub fn change(rows: &[Validation], prompts: usize) -> anyhow::Result<Option<Change>> {
    let (Some(first), Some(last)) = (
        rows.iter().min_by_key(|r| r.step),
        rows.iter().max_by_key(|r| r.step),
    ) else {
        return Ok(None);
    };
    if first.step == last.step {
        return Ok(None);
    }
    let change = paired(first, last, prompts)
        .with_context(|| format!("steps {} and {}", first.step, last.step))?;
    Ok(Some(Change {
        from_step: first.step,
        to_step: last.step,
        first: first.mean(),
        last: last.mean(),
        change,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_pairs_seeds_and_reads_the_first_and_last_step() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validation.jsonl");
        // 2 prompts x 3 seeds; the middle validation is not used.
        let lines = [
            r#"{"step":0,"reward_mean":0.5,"scores":[0.5,0.5, 0.0,1.0, 0.25,0.75]}"#,
            r#"{"step":50,"reward_mean":0.0,"scores":[0,0, 0,0, 0,0]}"#,
            r#"{"step":100,"reward_mean":0.7,"scores":[0.7,0.5, 0.3,1.0, 0.25,1.0]}"#,
        ];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let rows = read(&path).unwrap();
        assert_eq!(rows.len(), 3);
        let c = change(&rows, 2).unwrap().unwrap();
        assert_eq!((c.from_step, c.to_step), (0, 100));
        assert!((c.first - 0.5).abs() < 1e-12);
        assert!((c.last - 0.625).abs() < 1e-12);
        // Per-seed changes 0.1, 0.15, 0.125: mean 0.125, sd 0.025, t(2) 4.303.
        assert_eq!(c.change.n, 3);
        assert!((c.change.mean - 0.125).abs() < 1e-12);
        assert!((c.change.ci95 - 4.303 * 0.025 / 3f64.sqrt()).abs() < 1e-9);
        assert!(c.to_string().contains("+0.125 ± 0.062"), "{c}");
        assert!(c.to_string().contains("a resolved rise"), "{c}");
        // One prompt per row pairs every score: 6 repeats.
        assert_eq!(change(&rows, 1).unwrap().unwrap().change.n, 6);
        // Rows that do not divide into the prompts are named, not guessed.
        let err = format!("{:#}", change(&rows, 4).unwrap_err());
        assert!(
            err.contains("steps 0 and 100")
                && err.contains("6 scores")
                && err.contains("4 prompts"),
            "{err}"
        );
        // A single validation has no change.
        assert!(change(&rows[..1], 2).unwrap().is_none());
        // Two seeds that moved alike: an interval of zero width, and no verdict.
        let two = [
            Validation::new(0, vec![0.5, 0.5, 0.25, 0.75]),
            Validation::new(3, vec![0.75, 0.75, 0.5, 1.0]),
        ];
        let c = change(&two, 2).unwrap().unwrap();
        assert_eq!((c.change.n, c.change.ci95), (2, 0.0));
        assert!(c.to_string().contains("too few seeds to judge"), "{c}");
    }

    #[test]
    fn reading_names_the_line_that_is_not_a_validation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("validation.jsonl");
        assert!(read(&path).unwrap().is_empty(), "a missing file has none");
        std::fs::write(
            &path,
            "{\"step\":0,\"reward_mean\":0.5,\"scores\":[0.5]}\n\n{\"step\":5,\"reward_mean\":0.5}\n",
        )
        .unwrap();
        let err = format!("{:#}", read(&path).unwrap_err());
        assert!(
            err.contains("validation.jsonl line 3") && err.contains("scores"),
            "{err}"
        );
        // What the run writes reads back, a NaN reward (written as null) included.
        let written = [
            Validation::new(0, vec![0.25, 0.75]),
            Validation::new(5, vec![f64::NAN, 1.0]),
        ];
        let lines: Vec<String> = written
            .iter()
            .map(|v| serde_json::to_string(v).unwrap())
            .collect();
        assert!(lines[1].contains("null"), "{}", lines[1]);
        std::fs::write(&path, lines.join("\n")).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back[0], written[0]);
        assert_eq!(back[0].reward_mean, 0.5);
        assert!(back[1].reward_mean.is_nan() && back[1].scores[0].is_nan());
        assert_eq!(back[1].scores[1], 1.0);
    }
}
