//! NAL units of an H.264/H.265 access unit in byte-stream form: where they are, what each one is
//! for, and the order the standards ask for inside one access unit.
//!
//! Cameras do not always send that order. A camera whose encoder cuts each frame into several
//! slices and whose payloader repeats the parameter sets in front of every IDR *slice* (as
//! GStreamer's `rtph264pay config-interval=-1` does) sends `SPS PPS slice SPS PPS slice …` under
//! one RTP timestamp. By the standard, a parameter set after a slice begins a new access unit, so
//! the depayloader and the parser cut such a frame into one "frame" per slice, and a browser then
//! shows only the first slice of each picture. [`arrange`] puts one access unit back in order:
//! the delimiter first, then the parameter sets and prefix SEI (each distinct one once), the
//! slices as sent, and the rest after them. Pure: no GStreamer, no I/O.

use std::ops::Range;

/// The two codecs a camera's video comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
}

/// Where a NAL unit belongs inside its access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    /// The access unit delimiter: first, once.
    Delimiter,
    /// Parameter sets, prefix SEI and the like: before the first slice.
    BeforeSlices,
    /// The coded slices of the picture, in the order sent.
    Slice,
    /// Suffix SEI, end of sequence or stream, filler: after the slices.
    AfterSlices,
}

impl Codec {
    /// The NAL unit's type, from its first header byte.
    pub fn nal_type(self, header: u8) -> u8 {
        match self {
            Codec::H264 => header & 0x1f,
            Codec::H265 => (header >> 1) & 0x3f,
        }
    }

    /// True for a coded slice (a VCL NAL unit).
    pub fn is_slice(self, nal_type: u8) -> bool {
        match self {
            Codec::H264 => matches!(nal_type, 1..=5 | 19 | 20),
            Codec::H265 => nal_type <= 31,
        }
    }

    fn place(self, nal_type: u8) -> Place {
        if self.is_slice(nal_type) {
            return Place::Slice;
        }
        match (self, nal_type) {
            (Codec::H264, 9) | (Codec::H265, 35) => Place::Delimiter,
            // H.264: end of sequence, end of stream, filler. H.265: EOS, EOB, filler, suffix
            // SEI and the types reserved for suffixes.
            (Codec::H264, 10..=12) | (Codec::H265, 36..=38 | 40 | 45..=47) => Place::AfterSlices,
            _ => Place::BeforeSlices,
        }
    }
}

/// The NAL units of `data` (Annex B byte stream), each without its start code.
pub fn nal_units(data: &[u8]) -> Vec<Range<usize>> {
    // Every access unit of every camera is scanned: memchr's search is vectorised.
    let starts: Vec<usize> = memchr::memmem::find_iter(data, &[0, 0, 1])
        .map(|at| at + 3)
        .collect();
    let mut units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        // A four-byte start code's leading zero (and any trailing zeros) belong to no unit.
        while end > start && data[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        if end > start {
            units.push(start..end);
        }
    }
    units
}

/// One access unit made of the NAL units in `parts` (each part Annex B, in the order received),
/// in the standard's order. Returns `None` when the single part is already in order, so the
/// common case costs no copy.
pub fn arrange(codec: Codec, parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut units: Vec<(Place, &[u8])> = Vec::new();
    for part in parts {
        for range in nal_units(part) {
            let unit = &part[range];
            units.push((codec.place(codec.nal_type(unit[0])), unit));
        }
    }
    let in_order = units.windows(2).all(|pair| pair[0].0 <= pair[1].0)
        && units.iter().filter(|u| u.0 == Place::Delimiter).count() <= 1;
    if parts.len() == 1 && in_order {
        return None;
    }
    let mut arranged: Vec<&[u8]> = Vec::with_capacity(units.len());
    for place in [
        Place::Delimiter,
        Place::BeforeSlices,
        Place::Slice,
        Place::AfterSlices,
    ] {
        for &(_, unit) in units.iter().filter(|u| u.0 == place) {
            let repeated = place != Place::Slice && arranged.contains(&unit);
            let second_delimiter = place == Place::Delimiter && !arranged.is_empty();
            if !repeated && !second_delimiter {
                arranged.push(unit);
            }
        }
    }
    let mut out = Vec::with_capacity(arranged.iter().map(|u| u.len() + 4).sum());
    for unit in arranged {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Annex B stream of H.264 NAL units given by type (each unit's payload is its index, so
    /// equal types stay distinguishable unless `same` says otherwise).
    fn h264(units: &[(u8, u8)]) -> Vec<u8> {
        units
            .iter()
            .flat_map(|&(kind, payload)| [0, 0, 0, 1, 0x60 | kind, payload, 0x80])
            .collect()
    }

    fn kinds(codec: Codec, data: &[u8]) -> Vec<(u8, u8)> {
        nal_units(data)
            .into_iter()
            .map(|r| (codec.nal_type(data[r.start]), data[r.start + 1]))
            .collect()
    }

    fn check(parts: &[Vec<(u8, u8)>], expected: Option<&[(u8, u8)]>) {
        let bytes: Vec<Vec<u8>> = parts.iter().map(|p| h264(p)).collect();
        let refs: Vec<&[u8]> = bytes.iter().map(Vec::as_slice).collect();
        let arranged = arrange(Codec::H264, &refs);
        assert_eq!(
            arranged.as_deref().map(|a| kinds(Codec::H264, a)),
            expected.map(<[_]>::to_vec),
            "{parts:?}"
        );
    }

    #[test]
    fn start_codes_of_three_and_four_bytes() {
        let data = [0, 0, 1, 0x67, 1, 0, 0, 0, 1, 0x68, 2, 0, 0, 1, 0x65, 3, 0];
        let units: Vec<&[u8]> = nal_units(&data).into_iter().map(|r| &data[r]).collect();
        assert_eq!(units, [&[0x67, 1][..], &[0x68, 2], &[0x65, 3, 0]]);
        assert!(nal_units(&[0, 0, 0]).is_empty());
    }

    #[test]
    fn one_access_unit_from_a_frame_cut_at_each_repeated_parameter_set() {
        // rtph264pay config-interval=-1 with four slices: SPS/PPS before each IDR slice.
        check(
            &[
                vec![(9, 0), (7, 0), (8, 0), (5, 1)],
                vec![(7, 0), (8, 0), (5, 2)],
                vec![(7, 0), (8, 0), (5, 3)],
                vec![(7, 0), (8, 0), (5, 4)],
            ],
            Some(&[(9, 0), (7, 0), (8, 0), (5, 1), (5, 2), (5, 3), (5, 4)]),
        );
    }

    #[test]
    fn a_frame_in_order_is_left_alone() {
        check(
            &[vec![(9, 0), (7, 0), (8, 0), (6, 0), (5, 1), (5, 2)]],
            None,
        );
        check(&[vec![(1, 1), (1, 2), (1, 3), (12, 0)]], None);
    }

    #[test]
    fn parameter_sets_and_sei_after_a_slice_move_in_front() {
        // A different PPS (another id) is kept; SEI between slices goes before them.
        check(
            &[vec![
                (7, 0),
                (8, 0),
                (5, 1),
                (8, 9),
                (6, 5),
                (9, 0),
                (5, 2),
                (10, 0),
            ]],
            Some(&[
                (9, 0),
                (7, 0),
                (8, 0),
                (8, 9),
                (6, 5),
                (5, 1),
                (5, 2),
                (10, 0),
            ]),
        );
    }

    #[test]
    fn slices_of_one_picture_are_joined_as_sent() {
        check(
            &[vec![(1, 1)], vec![(1, 2)], vec![(1, 3)]],
            Some(&[(1, 1), (1, 2), (1, 3)]),
        );
    }

    #[test]
    fn h265_places() {
        let c = Codec::H265;
        // VPS, SPS, PPS, prefix SEI before; IDR_W_RADL and TRAIL_R slices; suffix SEI after.
        assert_eq!(c.place(32), Place::BeforeSlices);
        assert_eq!(c.place(39), Place::BeforeSlices);
        assert_eq!(c.place(35), Place::Delimiter);
        assert_eq!(c.place(19), Place::Slice);
        assert_eq!(c.place(1), Place::Slice);
        assert_eq!(c.place(40), Place::AfterSlices);
        let header = |kind: u8| [0, 0, 1, kind << 1, 1, 0xaa];
        let parts: Vec<Vec<u8>> = vec![
            [header(32), header(33), header(34), header(19)].concat(),
            [header(32), header(33), header(34), header(19)].concat(),
        ];
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let arranged = arrange(c, &refs).unwrap();
        let types: Vec<u8> = nal_units(&arranged)
            .into_iter()
            .map(|r| c.nal_type(arranged[r.start]))
            .collect();
        assert_eq!(types, [32, 33, 34, 19, 19]);
    }
}
