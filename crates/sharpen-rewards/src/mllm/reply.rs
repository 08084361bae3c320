//! The grading prompt and the strict parsing of the grader's reply.

use std::collections::BTreeMap;
use std::io::Cursor;

/// The aspects the grader scores, in reply order; `overall` comes last.
pub const ASPECTS: [&str; 6] = [
    "accuracy_to_prompt",
    "creativity",
    "visual_quality",
    "consistency",
    "thematic_resonance",
    "overall",
];

/// Our grading prompt; `{prompt}` is replaced by the image's prompt.
pub const DEFAULT_TEMPLATE: &str = "You are judging an image that a text-to-image model made \
from this prompt:\n\"{prompt}\"\n\nScore the image on each aspect from 0 (worst) to 10 (best):\n\
- accuracy_to_prompt: does it show everything the prompt asks for, with the right attributes, \
counts and relations?\n- creativity: is the interpretation original and interesting?\n\
- visual_quality: is it sharp, well lit and free of artefacts and distortions?\n\
- consistency: are objects, lighting, perspective and style coherent across the image?\n\
- thematic_resonance: does it convey the mood and theme the prompt implies?\n\
Then give overall, your overall judgement from 0 to 10.\n\
Answer with one JSON object and nothing else, with exactly these keys and numbers as values: \
{\"accuracy_to_prompt\": n, \"creativity\": n, \"visual_quality\": n, \"consistency\": n, \
\"thematic_resonance\": n, \"overall\": n}";

/// One image's grades: every aspect in [0, 10].
pub type Grades = BTreeMap<String, f64>;

pub(super) fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        format!("{t}…")
    } else {
        t
    }
}

/// The grades in a chat-completions reply: `choices[0].message.content` must be one JSON object
/// (optionally in a ```json fence) with exactly the [`ASPECTS`] as numbers in [0, 10].
pub fn parse_reply(body: &str) -> Result<Grades, String> {
    let reply: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the reply is not JSON ({e})"))?;
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| format!("no choices[0].message.content in {}", excerpt(body)))?;
    let mut inner = content.trim();
    if let Some(rest) = inner.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        inner = rest
            .trim()
            .strip_suffix("```")
            .ok_or_else(|| format!("unterminated code fence in {:?}", excerpt(content)))?
            .trim();
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(inner)
        .map_err(|e| format!("content is not a JSON object ({e}): {:?}", excerpt(content)))?;
    let mut grades = Grades::new();
    for aspect in ASPECTS {
        let value = object
            .get(aspect)
            .ok_or_else(|| format!("missing `{aspect}` in {:?}", excerpt(content)))?
            .as_f64()
            .ok_or_else(|| format!("`{aspect}` is not a number in {:?}", excerpt(content)))?;
        if !(0.0..=10.0).contains(&value) {
            return Err(format!("`{aspect}` = {value} is outside 0..10"));
        }
        grades.insert(aspect.to_string(), value);
    }
    if let Some(extra) = object.keys().find(|k| !ASPECTS.contains(&k.as_str())) {
        return Err(format!(
            "unexpected key `{extra}` in {:?}",
            excerpt(content)
        ));
    }
    Ok(grades)
}

/// One image as PNG bytes.
pub fn png_bytes(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut out), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("in-memory PNG header");
        writer.write_image_data(rgb).expect("in-memory PNG data");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(content: &str) -> String {
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
            .to_string()
    }

    const GOOD: &str = r#"{"accuracy_to_prompt": 8, "creativity": 6.5, "visual_quality": 7, "consistency": 9, "thematic_resonance": 5, "overall": 7.5}"#;

    #[test]
    fn replies_are_parsed_strictly() {
        let g = parse_reply(&reply(GOOD)).unwrap();
        assert_eq!(g["overall"], 7.5);
        assert_eq!(g.len(), 6);
        let fenced = parse_reply(&reply(&format!("```json\n{GOOD}\n```"))).unwrap();
        assert_eq!(fenced, g);
        for (content, needle) in [
            ("The image is nice. Overall 7", "not a JSON object"),
            (
                &GOOD.replace("\"overall\": 7.5", "\"overall\": 11"),
                "outside 0..10",
            ),
            (&GOOD.replace(", \"overall\": 7.5", ""), "missing `overall`"),
            (
                &GOOD.replace("7.5}", "7.5, \"notes\": \"x\"}"),
                "unexpected key `notes`",
            ),
            (
                &GOOD.replace("\"creativity\": 6.5", "\"creativity\": \"high\""),
                "`creativity` is not a number",
            ),
        ] {
            let e = parse_reply(&reply(content)).unwrap_err();
            assert!(e.contains(needle), "{content}: {e}");
        }
        assert!(parse_reply("<html>").unwrap_err().contains("not JSON"));
        assert!(parse_reply("{}").unwrap_err().contains("choices[0]"));
    }
}
