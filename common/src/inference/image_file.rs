//! PNG and JPEG images as the model's input: decoded with the `image` crate, checked against
//! the model's channels and size, and converted or resized only when asked, since a silently
//! resized or greyed image gives an embedding of something else than the user meant.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{ColorType, DynamicImage, ImageFormat};

use super::InferenceError;
use super::model::{ImageShape, Pixels};

/// Largest side decoded: far above any input the model takes, small enough that a hostile file
/// cannot make the decoder allocate gigabytes.
const MAX_SIDE: u32 = 8192;
/// Most bytes the decoder may allocate.
const MAX_ALLOC: u64 = 256 << 20;

/// What may be done to an image that does not fit the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Adapt {
    /// Resize (bilinear) an image of another size to the model's.
    pub resize: bool,
    /// Convert colour to grey (or grey to colour), dropping any alpha channel.
    pub convert: bool,
}

/// Channels of a colour type, in words.
fn describe(color: ColorType) -> String {
    match color {
        ColorType::L8 | ColorType::L16 => "grey (1 channel)".into(),
        ColorType::La8 | ColorType::La16 => "grey with alpha (2 channels)".into(),
        ColorType::Rgb8 | ColorType::Rgb16 | ColorType::Rgb32F => "RGB (3 channels)".into(),
        ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => "RGBA (4 channels)".into(),
        other => format!("{other:?}"),
    }
}

/// The model's channels, in words.
fn describe_channels(channels: usize) -> String {
    match channels {
        1 => "grey (1 channel)".into(),
        3 => "RGB (3 channels)".into(),
        c => format!("{c} channels"),
    }
}

/// Decodes a PNG or JPEG file's bytes into the model's input shape `want`; `name` is what
/// errors call it.
pub fn decode_image(
    bytes: &[u8],
    name: &str,
    want: ImageShape,
    adapt: Adapt,
) -> Result<Pixels, InferenceError> {
    let decode_error = |source| InferenceError::Decode {
        name: name.to_string(),
        source,
    };
    let mut reader = image::io::Reader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(image::ImageError::IoError(e)))?;
    match reader.format() {
        Some(ImageFormat::Png | ImageFormat::Jpeg) => {}
        Some(other) => {
            return Err(InferenceError::Format {
                name: name.to_string(),
                format: format!("{other:?}"),
            });
        }
        None => {
            return Err(InferenceError::Format {
                name: name.to_string(),
                format: "unrecognised".into(),
            });
        }
    }
    let mut limits = image::io::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let img = reader.decode().map_err(decode_error)?;
    let color = img.color();
    let grey = matches!(color, ColorType::L8 | ColorType::L16);
    let rgb = matches!(
        color,
        ColorType::Rgb8 | ColorType::Rgb16 | ColorType::Rgb32F
    );
    let fits = match want.channels {
        1 => grey,
        3 => rgb,
        _ => false,
    };
    if !fits && !adapt.convert {
        return Err(InferenceError::Channels {
            name: name.to_string(),
            found: describe(color),
            want: describe_channels(want.channels),
            hint: " (--convert converts it)",
        });
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (w, h) != (want.width, want.height) && !adapt.resize {
        return Err(InferenceError::Size {
            name: name.to_string(),
            found_w: w,
            found_h: h,
            want_w: want.width,
            want_h: want.height,
            hint: " (--resize resizes it)",
        });
    }
    let img = match (w, h) == (want.width, want.height) {
        true => img,
        false => img.resize_exact(want.width as u32, want.height as u32, FilterType::Triangle),
    };
    Ok(Pixels {
        shape: want,
        data: chw(&img, want.channels),
    })
}

/// 8-bit pixels in CHW order with `channels` channels (16-bit values scaled to 8 bits).
fn chw(img: &DynamicImage, channels: usize) -> Vec<u8> {
    match channels {
        1 => img.to_luma8().into_raw(),
        _ => {
            let rgb = img.to_rgb8();
            let plane = rgb.width() as usize * rgb.height() as usize;
            let mut out = vec![0u8; 3 * plane];
            for (i, px) in rgb.pixels().enumerate() {
                for c in 0..3 {
                    out[c * plane + i] = px.0[c];
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: ImageShape = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    const RGB: ImageShape = ImageShape {
        channels: 3,
        height: 32,
        width: 32,
    };

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn a_grey_png_of_the_right_size_reads_back_its_bytes() {
        let pixels: Vec<u8> = (0..784).map(|i| (i % 251) as u8).collect();
        let img = image::GrayImage::from_raw(28, 28, pixels.clone()).unwrap();
        let p = decode_image(&png(img.into()), "g.png", GREY, Adapt::default()).unwrap();
        assert_eq!(p.data, pixels);
    }

    #[test]
    fn rgb_is_written_channel_by_channel() {
        let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let p = decode_image(&png(img.into()), "c.png", RGB, Adapt::default()).unwrap();
        assert_eq!((p.data[1], p.data[1024 + 32], p.data[2048]), (1, 1, 7));
    }

    #[test]
    fn wrong_channels_size_format_and_corrupt_files_get_clear_errors() {
        let rgb = png(image::RgbImage::new(28, 28).into());
        let e = decode_image(&rgb, "c.png", GREY, Adapt::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "c.png: RGB (3 channels), the model takes grey (1 channel) (--convert converts it)"
        );
        let converted = Adapt {
            convert: true,
            ..Adapt::default()
        };
        assert_eq!(
            decode_image(&rgb, "c.png", GREY, converted)
                .unwrap()
                .data
                .len(),
            784
        );
        let big = png(image::GrayImage::new(56, 40).into());
        let e = decode_image(&big, "b.png", GREY, Adapt::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.png: the image is 56x40, the model takes 28x28 (--resize resizes it)"
        );
        let resize = Adapt {
            resize: true,
            ..Adapt::default()
        };
        assert_eq!(
            decode_image(&big, "b.png", GREY, resize)
                .unwrap()
                .data
                .len(),
            784
        );
        let mut cut = png(image::GrayImage::new(28, 28).into());
        cut.truncate(cut.len() / 2);
        let e = decode_image(&cut, "cut.png", GREY, Adapt::default()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cut.png: not a readable PNG or JPEG"),
            "{e}"
        );
        let e = decode_image(b"GIF89a....", "x.gif", GREY, Adapt::default()).unwrap_err();
        assert!(e.to_string().contains("Gif images are not read"), "{e}");
        let e = decode_image(b"hello", "x.txt", GREY, Adapt::default()).unwrap_err();
        assert!(e.to_string().contains("unrecognised"), "{e}");
    }
}
