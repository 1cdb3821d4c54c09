//! The plan as a user writes it (config `[plan]` or `--plan` on the command line), resolved against a
//! model package into a concrete [`Plan`].

use std::fmt;

use jmdc_core::calibration::{codec_name, parse_codec};
use jmdc_core::codec::{CodecParams, QuantMode};
use jmdc_core::jpeg;
use serde::Deserialize;

/// Where the model is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitSpec {
    /// Everything on the edge; no network.
    EdgeOnly,
    /// Everything in the cloud; the 8-bit image is sent.
    CloudOnly,
    /// The edge runs layers `0..n`, the cloud the rest.
    After(usize),
}

impl<'de> Deserialize<'de> for SplitSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => usize::try_from(n)
                .map(SplitSpec::After)
                .map_err(|_| serde::de::Error::custom("split must be >= 0")),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for SplitSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "edge-only" | "edge" => Ok(Self::EdgeOnly),
            "cloud-only" | "cloud" => Ok(Self::CloudOnly),
            n => n.parse::<usize>().map(Self::After).map_err(|_| {
                format!("split `{s}`: expected `edge-only`, `cloud-only` or a layer count")
            }),
        }
    }
}

/// How the split tensor is coded: `f32`, `f16`, `int2`…`int8` or `int2ac`…`int8ac` (entropy-coded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecSpec(pub QuantMode);

impl<'de> Deserialize<'de> for CodecSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for CodecSpec {
    type Err = String;
    /// The calibration table's codec names, exactly as it writes them
    /// ([`jmdc_core::calibration::codec_name`]): lower case, `int` rather than `q`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match parse_codec(s) {
            Ok(mode) if codec_name(mode) == s => Ok(Self(mode)),
            _ => Err(format!(
                "codec `{s}`: expected f32, f16, int2, int3, int4, int5, int6 or int8, \
                 or one of the int widths with `ac` (entropy-coded, e.g. int4ac)"
            )),
        }
    }
}

impl fmt::Display for CodecSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&codec_name(self.0))
    }
}

/// How a cloud-only plan sends the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputSpec {
    /// The raw 8-bit CHW image (also the value of every plan that is not cloud-only).
    #[default]
    Raw,
    /// A JPEG of the 8-bit image at this quality (1–100), encoded on the edge
    /// (`codec = "jpeg90"` with `split = "cloud-only"`).
    Jpeg(u8),
    /// Like `Jpeg`, but a frame whose source delivered a JPEG at exactly the model input size
    /// ([`crate::frame::Frame::jpeg`]) sends those bytes unchanged (no re-encoding; its quality is
    /// whatever the source used); other frames are encoded at this quality
    /// (`codec = "jpeg90"`, `forward_jpeg = true`).
    JpegForward(u8),
}

impl InputSpec {
    /// The JPEG quality of a JPEG input.
    pub fn jpeg_quality(self) -> Option<u8> {
        match self {
            InputSpec::Raw => None,
            InputSpec::Jpeg(q) | InputSpec::JpegForward(q) => Some(q),
        }
    }

    /// Turns source-JPEG forwarding on or off; `Err` for a raw input.
    fn with_forward(self, forward: bool) -> Result<InputSpec, String> {
        match (self.jpeg_quality(), forward) {
            (Some(q), true) => Ok(InputSpec::JpegForward(q)),
            (Some(q), false) => Ok(InputSpec::Jpeg(q)),
            (None, false) => Ok(InputSpec::Raw),
            (None, true) => Err("forward_jpeg needs a JPEG codec (codec = jpegQ)".into()),
        }
    }
}

/// A codec as written in a plan: a feature codec or, for cloud-only plans, `jpegQ`.
fn parse_any_codec(s: &str) -> Result<(CodecSpec, InputSpec), String> {
    if let Some(quality) = jpeg::parse_codec_name(s) {
        return Ok((default_codec(), InputSpec::Jpeg(quality)));
    }
    if s.trim()
        .to_ascii_lowercase()
        .starts_with(jpeg::CODEC_PREFIX)
    {
        return Err(format!(
            "codec `{s}`: a JPEG codec is jpegQ with a quality Q from 1 to 100, e.g. jpeg90"
        ));
    }
    s.parse::<CodecSpec>()
        .map(|c| (c, InputSpec::Raw))
        .map_err(|e| format!("{e}, or jpeg1…jpeg100 (cloud-only)"))
}

/// A plan as configured: variant, split, region keep ratio and codec.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "PlanToml")]
pub struct PlanSpec {
    /// Variant directory name, e.g. `keep100`, `keep050`.
    pub variant: String,
    /// Where the model is split (a layer index, edge-only or cloud-only).
    pub split: SplitSpec,
    /// Fraction of spatial positions sent, in (0, 1].
    pub keep_ratio: f32,
    /// Feature codec of a split plan.
    pub codec: CodecSpec,
    /// How a cloud-only plan sends the image (`codec = "jpeg90"` → `Jpeg(90)`).
    pub input: InputSpec,
}

/// `[plan]` as written: `codec` may name a feature codec or a JPEG quality.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanToml {
    variant: String,
    split: SplitSpec,
    #[serde(default = "one")]
    keep_ratio: f32,
    #[serde(default)]
    codec: Option<AnyCodec>,
    #[serde(default)]
    forward_jpeg: bool,
}

/// A `codec` value: feature codec or `jpegQ` (errors name the `codec` key).
struct AnyCodec(CodecSpec, InputSpec);

impl<'de> Deserialize<'de> for AnyCodec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (codec, input) =
            parse_any_codec(&String::deserialize(d)?).map_err(serde::de::Error::custom)?;
        Ok(AnyCodec(codec, input))
    }
}

impl TryFrom<PlanToml> for PlanSpec {
    type Error = String;
    fn try_from(t: PlanToml) -> Result<Self, String> {
        let AnyCodec(codec, input) = t.codec.unwrap_or(AnyCodec(default_codec(), InputSpec::Raw));
        Ok(PlanSpec {
            variant: t.variant,
            split: t.split,
            keep_ratio: t.keep_ratio,
            codec,
            input: input.with_forward(t.forward_jpeg)?,
        })
    }
}

fn one() -> f32 {
    1.0
}
fn default_codec() -> CodecSpec {
    CodecSpec(QuantMode::Bits(8))
}

impl PlanSpec {
    /// Checks the values that do not depend on the model.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(q) = self.input.jpeg_quality() {
            jpeg::validate_quality(q).map_err(|e| e.to_string())?;
            if self.split != SplitSpec::CloudOnly {
                return Err(format!(
                    "codec jpeg{q} sends the image as a JPEG: it needs split = cloud-only"
                ));
            }
        }
        self.codec_params().validate().map_err(|e| e.to_string())
    }

    /// The codec parameters of this plan.
    pub fn codec_params(&self) -> CodecParams {
        CodecParams {
            keep_ratio: self.keep_ratio,
            mode: self.codec.0,
        }
    }

    /// Resolves the split against a model with `layers` layers: the number of layers the edge runs.
    pub fn edge_layers(&self, layers: usize) -> Result<usize, String> {
        match self.split {
            SplitSpec::EdgeOnly => Ok(layers),
            SplitSpec::CloudOnly => Ok(0),
            SplitSpec::After(n) if n <= layers => Ok(n),
            SplitSpec::After(n) => Err(format!("split {n} is beyond the model's {layers} layers")),
        }
    }

    /// Parses the command-line form: `variant=keep050,split=6,keep=0.5,codec=int8` (or
    /// `split=cloud-only,codec=jpeg90`, optionally `forward_jpeg=true`); keys may be omitted and
    /// then come from `base`. A `codec` key sets both the feature codec and the input (`jpegQ` →
    /// JPEG, anything else → raw; source-JPEG forwarding only with `forward_jpeg=true`).
    pub fn parse_override(text: &str, base: &PlanSpec) -> Result<PlanSpec, String> {
        let mut plan = base.clone();
        let mut forward = None;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("plan `{text}`: `{part}` is not key=value"))?;
            match key {
                "variant" => plan.variant = value.to_owned(),
                "split" => plan.split = value.parse()?,
                "keep" | "keep_ratio" => {
                    plan.keep_ratio = value
                        .parse()
                        .map_err(|_| format!("plan `{text}`: keep `{value}` is not a number"))?
                }
                "codec" => (plan.codec, plan.input) = parse_any_codec(value)?,
                "forward_jpeg" => {
                    forward = Some(value.parse::<bool>().map_err(|_| {
                        format!("plan `{text}`: forward_jpeg `{value}` is not true or false")
                    })?)
                }
                other => {
                    return Err(format!(
                        "plan `{text}`: unknown key `{other}` (expected variant, split, keep, \
                         codec, forward_jpeg)"
                    ))
                }
            }
        }
        if let Some(forward) = forward {
            plan.input = plan.input.with_forward(forward)?;
        }
        plan.validate()?;
        Ok(plan)
    }
}

impl fmt::Display for PlanSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.split {
            SplitSpec::EdgeOnly => write!(f, "{} edge-only", self.variant),
            SplitSpec::CloudOnly => match self.input {
                InputSpec::Raw => write!(f, "{} cloud-only (u8 image)", self.variant),
                InputSpec::Jpeg(q) => write!(f, "{} cloud-only jpeg q{q}", self.variant),
                InputSpec::JpegForward(q) => write!(
                    f,
                    "{} cloud-only jpeg q{q} (source JPEGs forwarded)",
                    self.variant
                ),
            },
            SplitSpec::After(n) => write!(
                f,
                "{} split@{n} keep={:.2} {}",
                self.variant, self.keep_ratio, self.codec
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PlanSpec {
        PlanSpec {
            variant: "keep100".into(),
            split: SplitSpec::After(3),
            keep_ratio: 1.0,
            codec: CodecSpec(QuantMode::F32),
            input: InputSpec::Raw,
        }
    }

    #[test]
    fn override_changes_only_named_keys() {
        let p = PlanSpec::parse_override("split=6,codec=int4", &base()).expect("valid");
        assert_eq!(p.split, SplitSpec::After(6));
        assert_eq!(p.codec, CodecSpec(QuantMode::Bits(4)));
        assert_eq!(p.variant, "keep100");
    }

    #[test]
    fn bad_overrides_are_rejected_with_reason() {
        assert!(PlanSpec::parse_override("split=x", &base()).is_err());
        assert!(PlanSpec::parse_override("codec=int7", &base()).is_err());
        assert!(PlanSpec::parse_override("color=red", &base()).is_err());
        assert!(PlanSpec::parse_override("keep=0", &base()).is_err());
    }

    #[test]
    fn jpeg_cloud_only_plans() {
        let p = PlanSpec::parse_override("split=cloud-only,codec=jpeg90", &base()).expect("valid");
        assert_eq!(p.split, SplitSpec::CloudOnly);
        assert_eq!(p.input, InputSpec::Jpeg(90));
        assert_eq!(p.to_string(), "keep100 cloud-only jpeg q90");
        // Key order does not matter; any quality 1..=100.
        for q in [1u8, 50, 75, 100] {
            let p = PlanSpec::parse_override(&format!("codec=jpeg{q},split=cloud"), &base())
                .expect("valid");
            assert_eq!(p.input, InputSpec::Jpeg(q));
            assert_eq!(p.edge_layers(13), Ok(0));
        }
        // Back to a feature codec: the input is raw again.
        let p2 = PlanSpec::parse_override("split=6,codec=int4", &p).expect("valid");
        assert_eq!(p2.input, InputSpec::Raw);
        assert_eq!(p2.codec, CodecSpec(QuantMode::Bits(4)));
        // Raw cloud-only still prints as before.
        let raw = PlanSpec::parse_override("split=cloud-only", &base()).expect("valid");
        assert_eq!(raw.to_string(), "keep100 cloud-only (u8 image)");
    }

    #[test]
    fn bad_jpeg_plans_are_rejected_with_reason() {
        for (text, needle) in [
            ("split=cloud-only,codec=jpeg0", "jpegQ"),
            ("split=cloud-only,codec=jpeg101", "jpegQ"),
            ("split=cloud-only,codec=jpeg", "jpegQ"),
            ("split=cloud-only,codec=jpegx", "jpegQ"),
            ("split=6,codec=jpeg90", "cloud-only"),
            ("split=edge-only,codec=jpeg90", "cloud-only"),
            ("codec=jpeg90", "cloud-only"), // base split is 3
        ] {
            let err = PlanSpec::parse_override(text, &base()).expect_err(text);
            assert!(err.contains(needle), "{text}: {err}");
        }
        // A later split key that is not cloud-only invalidates a JPEG plan.
        let p = PlanSpec::parse_override("split=cloud-only,codec=jpeg75", &base()).expect("ok");
        assert!(PlanSpec::parse_override("split=4", &p).is_err());
    }

    #[test]
    fn forward_jpeg_option() {
        let p =
            PlanSpec::parse_override("forward_jpeg=true,split=cloud-only,codec=jpeg90", &base())
                .expect("valid in any key order");
        assert_eq!(p.input, InputSpec::JpegForward(90));
        assert_eq!(
            p.to_string(),
            "keep100 cloud-only jpeg q90 (source JPEGs forwarded)"
        );
        let off = PlanSpec::parse_override("forward_jpeg=false", &p).expect("valid");
        assert_eq!(off.input, InputSpec::Jpeg(90));
        // A new codec drops forwarding unless asked again.
        let q75 = PlanSpec::parse_override("codec=jpeg75", &p).expect("valid");
        assert_eq!(q75.input, InputSpec::Jpeg(75));
        for bad in [
            "forward_jpeg=true",
            "forward_jpeg=yes,codec=jpeg90,split=cloud-only",
        ] {
            assert!(PlanSpec::parse_override(bad, &base()).is_err(), "{bad}");
        }
        let t: PlanSpec = toml::from_str(
            "variant = \"k\"\nsplit = \"cloud-only\"\ncodec = \"jpeg60\"\nforward_jpeg = true\n",
        )
        .expect("toml");
        assert_eq!(t.input, InputSpec::JpegForward(60));
        assert!(toml::from_str::<PlanSpec>(
            "variant = \"k\"\nsplit = \"cloud-only\"\nforward_jpeg = true\n"
        )
        .is_err());
    }

    #[test]
    fn plan_toml_accepts_jpeg_codec() {
        let p: PlanSpec =
            toml::from_str("variant = \"keep050\"\nsplit = \"cloud-only\"\ncodec = \"jpeg75\"\n")
                .expect("parses");
        assert_eq!(p.input, InputSpec::Jpeg(75));
        assert!(p.validate().is_ok());
        let p: PlanSpec =
            toml::from_str("variant = \"keep050\"\nsplit = 6\ncodec = \"int4\"\n").expect("parses");
        assert_eq!(
            (p.codec, p.input),
            (CodecSpec(QuantMode::Bits(4)), InputSpec::Raw)
        );
        assert_eq!(p.keep_ratio, 1.0);
        let p: PlanSpec = toml::from_str("variant = \"keep050\"\nsplit = 6\n").expect("parses");
        assert_eq!(p.codec, CodecSpec(QuantMode::Bits(8)));
        for (name, mode) in [("int4ac", QuantMode::Coded(4)), ("f16", QuantMode::F16)] {
            let spec: CodecSpec = name.parse().expect(name);
            assert_eq!(spec, CodecSpec(mode));
            assert_eq!(spec.to_string(), name);
        }
        // Only the canonical names: not QuantMode's `q4`, not upper case, not unsupported widths.
        for bad in ["q4", "INT4", "int7", "int7ac", "int4AC", "ac", "int"] {
            assert!(bad.parse::<CodecSpec>().is_err(), "{bad}");
        }
        assert!(
            toml::from_str::<PlanSpec>("variant = \"k\"\nsplit = 6\ncodec = \"jpeg0\"\n").is_err()
        );
        assert!(toml::from_str::<PlanSpec>("variant = \"k\"\nsplit = 6\ncolour = 1\n").is_err());
    }

    #[test]
    fn split_resolution() {
        let mut p = base();
        p.split = SplitSpec::EdgeOnly;
        assert_eq!(p.edge_layers(13), Ok(13));
        p.split = SplitSpec::CloudOnly;
        assert_eq!(p.edge_layers(13), Ok(0));
        p.split = SplitSpec::After(14);
        assert!(p.edge_layers(13).is_err());
    }
}
