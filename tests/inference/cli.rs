//! `embed`, `compare` and `search` from the command line.

use crate::{GALLERY, arg, fixture, refuse, succeed, write_png};

/// The similarity a `compare` line reports, and its verdict.
fn compare(weights: &str, a: &str, b: &str) -> (f32, String) {
    let out = succeed(&["compare", "--weights", weights, a, b]);
    let similarity = out
        .split("similarity ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no similarity in {out:?}"));
    let verdict = if out.contains(" same (") {
        "same"
    } else {
        "different"
    };
    (similarity, verdict.to_string())
}

#[test]
fn compare_says_same_for_one_digit_and_different_for_two_in_most_of_a_sample() {
    let f = fixture();
    let dir = f.scratch.join("compare");
    std::fs::create_dir_all(&dir).unwrap();
    let labels = f.test.labels();
    // 60 pairs of one digit and 60 of two, from test images past the gallery's.
    let (mut same, mut different) = (Vec::new(), Vec::new());
    for i in 1000..labels.len() {
        let j = i + 1 + (i % 7);
        if j >= labels.len() {
            break;
        }
        match labels[i] == labels[j] {
            true if same.len() < 60 => same.push((i, j)),
            false if different.len() < 60 => different.push((i, j)),
            _ => {}
        }
        if same.len() == 60 && different.len() == 60 {
            break;
        }
    }
    let png = |i: usize| {
        let path = dir.join(format!("{i}.png"));
        write_png(&f.test, i, &path);
        path
    };
    let weights = arg(&f.weights);
    let mut right = [0, 0];
    for (k, pairs) in [&same, &different].into_iter().enumerate() {
        for &(i, j) in pairs {
            let (s, verdict) = compare(weights, arg(&png(i)), arg(&png(j)));
            assert_eq!(verdict == "same", s > 0.5);
            if (verdict == "same") == (k == 0) {
                right[k] += 1;
            }
        }
    }
    eprintln!(
        "compare: {} of 60 same-digit pairs same, {} of 60 two-digit pairs different",
        right[0], right[1]
    );
    // The model scores about 94% of test pairs right; 85% of each kind is the bar here.
    assert!(
        right[0] >= 51,
        "{} of 60 same-digit pairs called same",
        right[0]
    );
    assert!(
        right[1] >= 51,
        "{} of 60 two-digit pairs called different",
        right[1]
    );
}

#[test]
fn search_finds_the_query_itself_first_and_neighbours_of_its_digit() {
    let f = fixture();
    let weights = arg(&f.weights);
    let gallery = arg(&f.gallery);
    for i in [0usize, 7, 42, 199] {
        let name = format!("{i:04}-{}.png", f.test.label(i));
        let query = f.gallery.join(&name);
        let out = succeed(&[
            "search",
            "--weights",
            weights,
            "--gallery",
            gallery,
            "--query",
            arg(&query),
            "-k",
            "5",
        ]);
        let rows: Vec<&str> = out.lines().skip(2).collect();
        assert_eq!(rows.len(), 5, "{out}");
        assert!(rows[0].ends_with(&name), "{name} is not first:\n{out}");
        let distance: f32 = rows[0].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(distance < 1e-3, "{out}");
    }
    // Queries from outside the gallery (by index in the test file): the nearest gallery image
    // is mostly of the query's digit.
    let mut hits = 0;
    let queries = 1000..1040;
    for q in queries.clone() {
        let query = format!("{}#{q}", f.test_images.display());
        let out = succeed(&[
            "search",
            "--weights",
            weights,
            "--gallery",
            gallery,
            "--query",
            &query,
            "-k",
            "1",
        ]);
        let first = out.lines().nth(2).unwrap();
        let label: u8 = first
            .rsplit('-')
            .next()
            .unwrap()
            .trim_end_matches(".png")
            .parse()
            .unwrap();
        hits += usize::from(label == f.test.label(q));
    }
    eprintln!("search: {hits} of 40 nearest neighbours share the query's digit");
    assert!(
        hits >= 34,
        "{hits} of 40 nearest neighbours share the query's digit"
    );
    assert_eq!(GALLERY, 200);
}

#[test]
fn embed_writes_csv_and_npy_and_pngs_embed_like_their_dataset_images() {
    let f = fixture();
    let dir = f.scratch.join("embed");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = arg(&f.weights);
    let pngs = [
        f.gallery.join(format!("0000-{}.png", f.test.label(0))),
        f.gallery.join(format!("0001-{}.png", f.test.label(1))),
    ];
    let by_index = format!("{}#0..2", f.test_images.display());
    let csv = succeed(&[
        "embed",
        "--weights",
        weights,
        arg(&pngs[0]),
        arg(&pngs[1]),
        &by_index,
    ]);
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0][0], "input");
    assert_eq!(rows[0].len(), 11, "input and 10 values");
    assert_eq!(rows.len(), 5);
    // A PNG of a test image and the same image by index give the same numbers.
    assert_eq!(rows[1][1..], rows[3][1..]);
    assert_eq!(rows[2][1..], rows[4][1..]);
    assert!(rows[3][0].ends_with("#0"));
    let npy = dir.join("e.npy");
    succeed(&["embed", "--weights", weights, &by_index, "--out", arg(&npy)]);
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let values: Vec<f32> = bytes[10 + header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(values.len(), 20);
    let from_csv: Vec<f32> = rows[3][1..].iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(values[..10], from_csv[..]);
}

#[test]
fn bad_inputs_get_clear_errors_never_a_panic() {
    let f = fixture();
    let dir = f.scratch.join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = arg(&f.weights);
    let good = f.gallery.join(format!("0000-{}.png", f.test.label(0)));
    // Another size: refused unless --resize.
    let big = dir.join("big.png");
    image::GrayImage::new(56, 56).save(&big).unwrap();
    let e = refuse(&["embed", "--weights", weights, arg(&big)]);
    assert!(
        e.contains("big.png: the image is 56x56, the model takes 28x28 (--resize resizes it)"),
        "{e}"
    );
    succeed(&["embed", "--weights", weights, "--resize", arg(&big)]);
    // Colour for a grey model: refused unless --convert.
    let rgb = dir.join("rgb.png");
    image::RgbImage::new(28, 28).save(&rgb).unwrap();
    let e = refuse(&["compare", "--weights", weights, arg(&rgb), arg(&good)]);
    assert!(
        e.contains("rgb.png: RGB (3 channels), the model takes grey (1 channel)"),
        "{e}"
    );
    succeed(&[
        "compare",
        "--weights",
        weights,
        "--convert",
        arg(&rgb),
        arg(&good),
    ]);
    // A corrupt PNG.
    let cut = dir.join("cut.png");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = refuse(&["embed", "--weights", weights, arg(&cut)]);
    assert!(
        e.contains("cut.png: not a readable PNG or JPEG image"),
        "{e}"
    );
    // An index past the file.
    let e = refuse(&[
        "embed",
        "--weights",
        weights,
        &format!("{}#10000", f.test_images.display()),
    ]);
    assert!(
        e.contains("index 10000 is past the file's 10000 images"),
        "{e}"
    );
    // Another dataset's file (two CIFAR-10 records) for this MNIST model: never converted.
    let cifar = dir.join("data_batch_1.bin");
    std::fs::write(&cifar, vec![0u8; 2 * 3073]).unwrap();
    let e = refuse(&[
        "embed",
        "--weights",
        weights,
        "--convert",
        &format!("{}#0", cifar.display()),
    ]);
    assert!(
        e.contains(
            "3 channel(s), the model takes 1 channel(s) (the file holds another dataset's images"
        ),
        "{e}"
    );
    // A checkpoint missing a tensor, and a file that is no checkpoint.
    let partial = dir.join("partial.safetensors");
    let all = std::fs::read(&f.weights).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&all).unwrap();
    let kept: Vec<_> = tensors
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != "fc2.bias")
        .collect();
    safetensors::serialize_to_file(kept, None, &partial).unwrap();
    let e = refuse(&["embed", "--weights", arg(&partial), arg(&good)]);
    assert!(e.contains("no tensor named fc2.bias"), "{e}");
    let e = refuse(&["embed", "--weights", arg(&good), arg(&good)]);
    assert!(e.contains("not a safetensors file"), "{e}");
    // A gallery without images.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = refuse(&[
        "search",
        "--weights",
        weights,
        "--gallery",
        arg(&empty),
        "--query",
        arg(&good),
    ]);
    assert!(e.contains("no PNG or JPEG files"), "{e}");
    // A gallery folder that is not there.
    let absent = dir.join("absent");
    let e = refuse(&[
        "search",
        "--weights",
        weights,
        "--gallery",
        arg(&absent),
        "--query",
        arg(&good),
    ]);
    assert!(e.contains("absent: the folder cannot be read"), "{e}");
    // An index that is not one, after a dataset file that exists.
    let e = refuse(&[
        "embed",
        "--weights",
        weights,
        &format!("{}#-1", f.test_images.display()),
    ]);
    assert!(e.contains("\"-1\" after the # of"), "{e}");
    // The service's address file where a file stands in for its folder: refused before the
    // model is loaded and the port bound.
    let address = format!("{}/address", good.display());
    let e = refuse(&[
        "serve",
        "--weights",
        weights,
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--address-file",
        &address,
    ]);
    assert!(e.contains("png is a file, not a folder"), "{e}");
    // No threads: refused by the flag's parser (status 2).
    let out = crate::coordinator(&["embed", "--weights", weights, "--threads", "0", arg(&good)]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("0 is outside 1 to 1024"), "{e}");
}
