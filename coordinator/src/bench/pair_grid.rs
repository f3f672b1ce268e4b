//! A grid of test pairs as one PNG, like the paper's Figures 6, 9 and 10: each cell shows the two
//! images side by side, labelled with their similarity and whether they are the same class.

use std::path::Path;

use plotters::prelude::*;

use super::plot::{PlotError, fonts_ready};
use siamese_common::data::ImageSet;
use siamese_common::pairs::Pair;

/// Screen pixels per image pixel: 28x28 digits become 112x112, readable at a glance.
pub const SCALE: u32 = 4;
/// Space between and around the cells, in screen pixels.
const GAP: u32 = 12;
/// Height of the text line under each pair.
const LABEL_H: u32 = 22;
/// Width of the border whose colour says whether the prediction was right.
const BORDER: u32 = 3;

/// Size in screen pixels of a grid of `pairs` pairs in `cols` columns of `(h, w)` images.
pub fn grid_size(pairs: usize, cols: usize, (h, w): (usize, usize)) -> (u32, u32) {
    let cols = cols.clamp(1, pairs.max(1));
    let rows = pairs.max(1).div_ceil(cols);
    let (cw, ch) = cell_size(h, w);
    let width = GAP + cols as u32 * (cw + GAP);
    let height = GAP + rows as u32 * (ch + GAP);
    (width, height)
}

/// (width, height) of one cell: two images, a gap between them, the border and the label.
fn cell_size(h: usize, w: usize) -> (u32, u32) {
    let (w, h) = (w as u32 * SCALE, h as u32 * SCALE);
    (2 * w + GAP / 2 + 2 * BORDER, h + 2 * BORDER + LABEL_H)
}

/// RGB of pixel (y, x) of a CHW image: grey for one channel, the first three channels otherwise.
fn rgb(image: &[u8], (c, h, w): (usize, usize, usize), y: usize, x: usize) -> RGBColor {
    let at = |ch: usize| image[ch * h * w + y * w + x];
    if c >= 3 {
        RGBColor(at(0), at(1), at(2))
    } else {
        RGBColor(at(0), at(0), at(0))
    }
}

/// Draws `pairs` of `set` with their `scores` in `cols` columns into a PNG at `path`.
///
/// The border is green where the prediction (similarity > 0.5 means "same") is right and red
/// where it is wrong, so the grid says something even when no font is found.
pub fn draw_pair_grid(
    set: &ImageSet,
    pairs: &[Pair],
    scores: &[f32],
    cols: usize,
    path: &Path,
) -> Result<(), PlotError> {
    if pairs.len() != scores.len() {
        return Err(format!(
            "{} pairs but {} scores to draw",
            pairs.len(),
            scores.len()
        ));
    }
    if let Some(p) = pairs
        .iter()
        .find(|p| p.a as usize >= set.len() || p.b as usize >= set.len())
    {
        return Err(format!(
            "pair ({}, {}) is outside the {} images",
            p.a,
            p.b,
            set.len()
        ));
    }
    let shape = set.shape();
    let (_, h, w) = shape;
    let cols = cols.clamp(1, pairs.len().max(1));
    let text = fonts_ready();
    let root = BitMapBackend::new(path, grid_size(pairs.len(), cols, (h, w))).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (cw, ch) = cell_size(h, w);
    let s = SCALE as i32;
    for (k, (pair, &score)) in pairs.iter().zip(scores).enumerate() {
        let x0 = (GAP + (k % cols) as u32 * (cw + GAP)) as i32;
        let y0 = (GAP + (k / cols) as u32 * (ch + GAP)) as i32;
        let right = (score > 0.5) == pair.same;
        let frame = if right {
            RGBColor(30, 150, 60)
        } else {
            RGBColor(210, 40, 40)
        };
        let img_h = (ch - LABEL_H) as i32;
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + cw as i32, y0 + img_h)],
            frame.filled(),
        ))
        .map_err(|e| e.to_string())?;
        for (side, index) in [pair.a, pair.b].into_iter().enumerate() {
            let image = set.image(index as usize);
            let ox = x0 + BORDER as i32 + side as i32 * (w as i32 * s + (GAP / 2) as i32);
            let oy = y0 + BORDER as i32;
            if side == 1 {
                // The strip between the two images is white, so they read as two pictures.
                let gx = ox - (GAP / 2) as i32;
                root.draw(&Rectangle::new(
                    [(gx, oy), (ox, oy + h as i32 * s)],
                    WHITE.filled(),
                ))
                .map_err(|e| e.to_string())?;
            }
            for y in 0..h {
                for x in 0..w {
                    let (px, py) = (ox + x as i32 * s, oy + y as i32 * s);
                    let c = rgb(image, shape, y, x);
                    root.draw(&Rectangle::new([(px, py), (px + s, py + s)], c.filled()))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        if text {
            let truth = if pair.same { "same" } else { "different" };
            let label = format!("s = {score:.2}  {truth}");
            let style = ("sans-serif", 16).into_font().color(&BLACK);
            root.draw(&Text::new(label, (x0 + 2, y0 + img_h + 3), style))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // IHDR is the first chunk: width and height, big-endian, at bytes 16..24.
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        (be(16), be(20))
    }

    fn set(n: usize, c: usize, side: usize) -> ImageSet {
        let len = c * side * side;
        let pixels = (0..n * len).map(|i| (i * 7 % 256) as u8).collect();
        ImageSet::new(
            pixels,
            (0..n).map(|i| (i % 10) as u8).collect(),
            c,
            side,
            side,
        )
        .unwrap()
    }

    #[test]
    fn a_four_by_four_grid_of_grey_pairs_has_the_computed_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.png");
        let images = set(40, 1, 28);
        let pairs: Vec<Pair> = (0..16u32)
            .map(|i| Pair {
                a: i,
                b: i + 20,
                same: i % 2 == 0,
            })
            .collect();
        let scores: Vec<f32> = (0..16).map(|i| i as f32 / 16.0).collect();
        draw_pair_grid(&images, &pairs, &scores, 4, &path).unwrap();
        let (w, h) = grid_size(16, 4, (28, 28));
        // Four cells of two 112-pixel images, with borders and gaps.
        assert_eq!(w, GAP + 4 * (2 * 112 + GAP / 2 + 2 * BORDER + GAP));
        assert_eq!(h, GAP + 4 * (112 + 2 * BORDER + LABEL_H + GAP));
        assert_eq!(png_size(&path), (w, h));
    }

    #[test]
    fn colour_pairs_draw_and_a_ragged_last_row_still_fits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cifar.png");
        let images = set(6, 3, 32);
        let pairs: Vec<Pair> = (0..5u32)
            .map(|i| Pair {
                a: i,
                b: i + 1,
                same: false,
            })
            .collect();
        draw_pair_grid(&images, &pairs, &[0.1; 5], 2, &path).unwrap();
        assert_eq!(png_size(&path), grid_size(5, 2, (32, 32)));
        assert_eq!(
            grid_size(5, 2, (32, 32)).1,
            GAP + 3 * (128 + 2 * BORDER + LABEL_H + GAP)
        );
    }

    #[test]
    fn mismatched_scores_and_bad_indices_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let images = set(2, 1, 28);
        let pair = Pair {
            a: 0,
            b: 5,
            same: true,
        };
        assert!(draw_pair_grid(&images, &[pair], &[], 4, &path).is_err());
        let err = draw_pair_grid(&images, &[pair], &[0.5], 4, &path).unwrap_err();
        assert!(err.contains("outside the 2 images"), "{err}");
    }
}
