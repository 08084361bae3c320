//! The experiment's results page (`docs/results/shapes.md`): the generated part (plan, held-out
//! table, figures, summed training time) above a marker, the hand-written reading below it, which a
//! rewrite keeps.

use std::path::Path;

use anyhow::Context;

use crate::experiment::Options;

/// A finished run's training time: the last `elapsed_s` of its `metrics.jsonl` (which counts
/// across resumes), so that an experiment spread over several invocations reports all of it.
pub fn training_seconds(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("metrics.jsonl");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("{} is empty", path.display()))?;
    let row: serde_json::Value =
        serde_json::from_str(last).with_context(|| format!("parsing {}", path.display()))?;
    row["elapsed_s"]
        .as_f64()
        .with_context(|| format!("{}: no `elapsed_s` in its last line", path.display()))
}

pub fn write_results(
    o: &Options,
    plan: &str,
    report: &str,
    train_s: f64,
    figures: &Path,
) -> anyhow::Result<()> {
    let folder = figures
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let page = format!(
        "# Shapes world: sharpening vs the baselines\n\n\
         Produced by `cargo xtask experiment shapes --seeds {} --queries {}` \
         (training {:.0} min on this machine, summed over the runs; every method starts from `{}`).\n\n\
         ## Training budget\n\n{plan}\n\
         ## Held-out results\n\n{report}\n\
         ![reward vs NFEs]({folder}/reward-vs-nfe.png)\n\n\
         ![validation reward vs training step]({folder}/reward-vs-step.png)\n",
        o.seeds,
        o.queries,
        train_s / 60.0,
        o.model.display()
    );
    let previous = match std::fs::read_to_string(&o.results) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", o.results.display())),
    };
    let page = keep_hand_written(&page, previous.as_deref());
    let tmp = o.results.with_extension("md.tmp");
    std::fs::write(&tmp, page).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &o.results).with_context(|| format!("writing {}", o.results.display()))
}

/// The line under which a results page is written by hand (the reading of the numbers); the
/// command regenerates everything above it and keeps everything below it.
pub const HAND_WRITTEN: &str =
    "<!-- Written by hand below this line: `cargo xtask experiment` keeps it when it rewrites the page. -->";

/// `generated` followed by the hand-written part of the `previous` page (from [`HAND_WRITTEN`]
/// on), or by the bare marker when there is none yet.
fn keep_hand_written(generated: &str, previous: Option<&str>) -> String {
    let tail = previous
        .and_then(|p| p.find(HAND_WRITTEN).map(|i| &p[i..]))
        .unwrap_or(HAND_WRITTEN);
    let tail = tail.trim_end();
    format!("{}\n\n{tail}\n", generated.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_the_page_keeps_its_hand_written_reading() {
        let first = keep_hand_written("# Page\n\n| a |\n", None);
        assert!(first.starts_with("# Page\n\n| a |\n\n"));
        assert!(first.trim_end().ends_with(HAND_WRITTEN), "{first}");
        let edited = format!("{first}\n## Reading\n\n- SFT equals standard.\n");
        let second = keep_hand_written("# Page\n\n| b |\n", Some(&edited));
        assert!(
            second.contains("| b |") && !second.contains("| a |"),
            "{second}"
        );
        assert!(
            second.ends_with("## Reading\n\n- SFT equals standard.\n"),
            "{second}"
        );
        assert_eq!(second.matches(HAND_WRITTEN).count(), 1);
        assert_eq!(
            keep_hand_written("# Page\n", Some(&second)),
            format!(
                "# Page\n\n{}",
                &second[second.find(HAND_WRITTEN).unwrap()..]
            )
        );
        // A page written before the marker existed loses nothing it did not generate itself.
        let old = keep_hand_written("# New\n", Some("# Old page\n"));
        assert!(!old.contains("Old page") && old.contains(HAND_WRITTEN));
    }

    #[test]
    fn training_time_is_the_last_elapsed_of_each_run() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("metrics.jsonl"),
            "{\"step\":1,\"elapsed_s\":2.5}\n{\"step\":2,\"elapsed_s\":7.25}\n\n",
        )
        .unwrap();
        assert_eq!(training_seconds(&dir).unwrap(), 7.25);
        std::fs::write(dir.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
        let err = training_seconds(&dir).unwrap_err().to_string();
        assert!(err.contains("elapsed_s"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(training_seconds(&dir).is_err(), "a missing run is an error");
    }
}
