//! The scorer against rendered ground truth, wrong captions and single-attribute changes; splits.

use std::collections::HashSet;

use shapes_world::{
    checks, is_held_out, score, Checks, Color, Object, Scene, SceneList, ShapesWorld, Split,
    COLORS, RELATIONS, SHAPES,
};

fn world(split: Split) -> ShapesWorld {
    ShapesWorld {
        split,
        size: 32,
        seed: 7,
    }
}

#[test]
fn ground_truth_scores_all_correct() {
    let w = world(Split::Train);
    let n = 500;
    let correct = (0..n)
        .filter(|&i| {
            let (scene, image) = w.get(i);
            let s = score(&image.rgb, image.size, &scene.to_string());
            s.all_correct && s.partial == 1.0
        })
        .count();
    println!("ground truth: {correct}/{n} all-correct");
    assert!(correct as f64 >= 0.99 * n as f64, "{correct}/{n}");
}

fn change_one_attribute(scene: &Scene, k: u64) -> Scene {
    let mut s = *scene;
    let other_color = |c: Color, avoid: Option<Color>| {
        COLORS
            .into_iter()
            .find(|&x| x != c && Some(x) != avoid)
            .unwrap()
    };
    match (k % 3, s.second) {
        (0, second) => s.first.color = other_color(s.first.color, second.map(|(_, o)| o.color)),
        (1, _) | (2, None) => {
            s.first.shape = SHAPES.into_iter().find(|&x| x != s.first.shape).unwrap()
        }
        (2, Some((rel, obj))) => {
            let flipped = RELATIONS.into_iter().find(|&r| r != rel).unwrap();
            s.second = Some((flipped, obj));
        }
        _ => unreachable!(),
    }
    s
}

#[test]
fn wrong_captions_are_rarely_all_correct() {
    let w = world(Split::Train);
    let n = 300;
    let (mut random_hits, mut changed_hits, mut random_partial) = (0, 0, 0.0);
    for i in 0..n {
        let (scene, image) = w.get(i);
        let (other, _) = w.get(10_000 + i);
        if other != scene {
            let s = score(&image.rgb, image.size, &other.to_string());
            random_hits += usize::from(s.all_correct);
            random_partial += s.partial;
        }
        let changed = change_one_attribute(&scene, i);
        assert_ne!(changed, scene);
        changed_hits +=
            usize::from(score(&image.rgb, image.size, &changed.to_string()).all_correct);
    }
    println!("random captions: {random_hits}/{n} all-correct, mean partial {:.2}; one attribute changed: {changed_hits}/{n}", random_partial / n as f64);
    assert!(random_hits as u64 <= n / 100, "{random_hits}");
    assert!(changed_hits as u64 <= n / 100, "{changed_hits}");
    assert_eq!(
        score(&[0; 32 * 32 * 3], 32, "a red circle").partial,
        0.0,
        "an empty image passes no check"
    );
    assert_eq!(
        score(&[0; 32 * 32 * 3], 32, "a photo of a cat").partial,
        0.0,
        "captions outside the world score 0"
    );
}

#[test]
fn splits_keep_held_out_combinations_out_of_training() {
    let held: HashSet<String> = (0..300)
        .map(|i| world(Split::HeldOut).get(i).0.to_string())
        .collect();
    for split in [Split::Train, Split::Validation] {
        for i in 0..300 {
            let (scene, _) = world(split).get(i);
            assert!(!is_held_out(&scene), "{scene} in {split:?}");
            assert!(!held.contains(&scene.to_string()));
        }
    }
    assert!((0..50).all(|i| is_held_out(&world(Split::HeldOut).get(i).0)));
    // Deterministic per index; different across splits.
    assert_eq!(world(Split::Train).get(3), world(Split::Train).get(3));
    assert_ne!(
        world(Split::Train).get(3).1,
        world(Split::Validation).get(3).1
    );
    let _ = Object {
        color: Color::Red,
        shape: SHAPES[0],
    };
}

#[test]
fn a_scene_list_cycles_its_scenes_at_varied_layouts() {
    let captions = ["a red circle", "a green square above a blue triangle"];
    let list = SceneList {
        scenes: captions.iter().map(|c| Scene::parse(c).unwrap()).collect(),
        size: 32,
        seed: 3,
    };
    let items: Vec<_> = (0..40).map(|i| list.get(i).expect("renders")).collect();
    for (i, (scene, image)) in items.iter().enumerate() {
        assert_eq!(scene.to_string(), captions[i % 2], "item {i}");
        let s = score(&image.rgb, image.size, &scene.to_string());
        assert!(s.all_correct, "item {i}: the render matches its caption");
    }
    let layouts: HashSet<&Vec<u8>> = items.iter().map(|(_, image)| &image.rgb).collect();
    assert!(
        layouts.len() >= 35,
        "{} distinct renders of 40",
        layouts.len()
    );
    assert_eq!(list.get(7), list.get(7), "an item is the same every time");
    let empty = SceneList {
        scenes: vec![],
        ..list
    };
    assert_eq!(empty.get(0), None);
}

#[test]
fn each_check_fails_on_its_own() {
    let list = SceneList {
        scenes: vec![Scene::parse("a red square above a blue triangle").unwrap()],
        size: 32,
        seed: 11,
    };
    let (scene, image) = list.get(0).unwrap();
    let check = |caption: &str| checks(&image.rgb, image.size, caption).expect("a world caption");
    let right = Checks {
        first_found: true,
        first_shape: true,
        second_found: Some(true),
        second_shape: Some(true),
        relation: Some(true),
        count: true,
    };
    assert_eq!(check(&scene.to_string()), right);
    assert_eq!(
        check("a red circle above a blue triangle"),
        Checks {
            first_shape: false,
            ..right
        }
    );
    assert_eq!(
        check("a red square above a blue square"),
        Checks {
            second_shape: Some(false),
            ..right
        }
    );
    assert_eq!(
        check("a red square below a blue triangle"),
        Checks {
            relation: Some(false),
            ..right
        }
    );
    // A colour that is not there: neither it nor its shape is found, nor a relation to it.
    assert_eq!(
        check("a green square above a blue triangle"),
        Checks {
            first_found: false,
            first_shape: false,
            relation: Some(false),
            ..right
        }
    );
    // One object named, two drawn.
    assert_eq!(
        check("a red square"),
        Checks {
            second_found: None,
            second_shape: None,
            relation: None,
            count: false,
            ..right
        }
    );
    assert_eq!(checks(&image.rgb, 32, "a photo of a cat"), None);
    // A third blob of 9 yellow pixels in a corner: an object too many.
    let mut extra = image.rgb.clone();
    for y in 0..3 {
        for x in 0..3 {
            let i = (y * 32 + x) * 3;
            extra[i..i + 3].copy_from_slice(&Color::Yellow.rgb());
        }
    }
    assert_eq!(
        checks(&extra, 32, &scene.to_string()),
        Some(Checks {
            count: false,
            ..right
        })
    );

    // The score is the checks' pass rate, on ground truth and on wrong captions alike.
    let w = world(Split::Train);
    for i in 0..200 {
        let (scene, image) = w.get(i);
        let (other, _) = w.get(5_000 + i);
        for caption in [scene.to_string(), other.to_string()] {
            let c = checks(&image.rgb, image.size, &caption).unwrap();
            assert_eq!(c.all().len(), if c.relation.is_some() { 6 } else { 3 });
            assert_eq!(
                c.score(),
                score(&image.rgb, image.size, &caption),
                "{caption}"
            );
        }
    }
}
