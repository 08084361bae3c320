//! Scenes and their captions: one or two coloured shapes, and for two a spatial relation.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Color {
    Red,
    Green,
    Blue,
    Yellow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Relation {
    LeftOf,
    RightOf,
    Above,
    Below,
}

pub const COLORS: [Color; 4] = [Color::Red, Color::Green, Color::Blue, Color::Yellow];
pub const SHAPES: [Shape; 3] = [Shape::Circle, Shape::Square, Shape::Triangle];
pub const RELATIONS: [Relation; 4] = [
    Relation::LeftOf,
    Relation::RightOf,
    Relation::Above,
    Relation::Below,
];

impl Color {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Self::Red => [255, 0, 0],
            Self::Green => [0, 255, 0],
            Self::Blue => [0, 0, 255],
            Self::Yellow => [255, 255, 0],
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Green => "green",
            Self::Blue => "blue",
            Self::Yellow => "yellow",
        }
    }
}

impl Shape {
    pub fn word(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "square",
            Self::Triangle => "triangle",
        }
    }
}

impl Relation {
    pub fn words(self) -> &'static str {
        match self {
            Self::LeftOf => "to the left of",
            Self::RightOf => "to the right of",
            Self::Above => "above",
            Self::Below => "below",
        }
    }
}

/// A coloured shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Object {
    pub color: Color,
    pub shape: Shape,
}

/// What an image shows and its caption says: `first` alone, or `first <relation> second` (the
/// two objects always differ in colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scene {
    pub first: Object,
    pub second: Option<(Relation, Object)>,
}

impl fmt::Display for Scene {
    /// "a red circle" or "a red circle above a blue square".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} {}",
            self.first.color.word(),
            self.first.shape.word()
        )?;
        if let Some((rel, obj)) = self.second {
            write!(
                f,
                " {} a {} {}",
                rel.words(),
                obj.color.word(),
                obj.shape.word()
            )?;
        }
        Ok(())
    }
}

impl Scene {
    /// Parses a caption of this world (case and surrounding spaces ignored); `None` for anything else.
    pub fn parse(caption: &str) -> Option<Self> {
        let text = caption.trim().to_ascii_lowercase();
        let object = |s: &str| -> Option<Object> {
            let words: Vec<&str> = s.split_whitespace().collect();
            let ["a", color, shape] = words.as_slice() else {
                return None;
            };
            let color = COLORS.into_iter().find(|c| c.word() == *color)?;
            let shape = SHAPES.into_iter().find(|sh| sh.word() == *shape)?;
            Some(Object { color, shape })
        };
        for rel in RELATIONS {
            if let Some((a, b)) = text.split_once(&format!(" {} ", rel.words())) {
                let (first, second) = (object(a)?, object(b)?);
                return (first.color != second.color).then_some(Self {
                    first,
                    second: Some((rel, second)),
                });
            }
        }
        object(&text).map(|first| Self {
            first,
            second: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_round_trip() {
        let s = Scene {
            first: Object {
                color: Color::Red,
                shape: Shape::Circle,
            },
            second: Some((
                Relation::LeftOf,
                Object {
                    color: Color::Blue,
                    shape: Shape::Square,
                },
            )),
        };
        assert_eq!(s.to_string(), "a red circle to the left of a blue square");
        assert_eq!(Scene::parse(&s.to_string()), Some(s));
        assert_eq!(
            Scene::parse("  A Yellow Triangle "),
            Some(Scene {
                first: Object {
                    color: Color::Yellow,
                    shape: Shape::Triangle
                },
                second: None
            })
        );
        assert_eq!(
            Scene::parse("a red circle above a red square"),
            None,
            "two objects differ in colour"
        );
        assert_eq!(Scene::parse("a purple circle"), None);
        assert_eq!(Scene::parse("a photo of a cat"), None);
    }
}
