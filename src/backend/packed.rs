//! Host arrays packed into one u32 buffer, so that everything a decoding step's ops index into
//! reaches the device in one host-to-device copy ([`crate::backend::Backend::upload_words_into`]);
//! each array is then read at the word offset its push returned.

/// A growing buffer of u32 words (f32 and i32 values as their bits, bytes four to a word).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    words: Vec<u32>,
}

impl Packed {
    /// Append `values`; returns their word offset.
    pub fn push(&mut self, values: &[u32]) -> usize {
        let at = self.words.len();
        self.words.extend_from_slice(values);
        at
    }

    /// Append the bits of `values`; returns their word offset.
    pub fn push_i32(&mut self, values: &[i32]) -> usize {
        self.push(bytemuck::cast_slice(values))
    }

    /// Append the bits of `values`; returns their word offset.
    pub fn push_f32(&mut self, values: &[f32]) -> usize {
        self.push(bytemuck::cast_slice(values))
    }

    /// Append `bytes` four to a word, little-endian (a kernel reads them as `unsigned char*`);
    /// returns their word offset.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> usize {
        let at = self.words.len();
        self.words.extend(bytes.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (i, &b)| w | u32::from(b) << (8 * i))));
        at
    }

    /// The packed words.
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// `len` words of `words` from `at`, or `None` when they are not all inside it.
pub(crate) fn part(words: &[u32], at: usize, len: usize) -> Option<&[u32]> {
    words.get(at..at.checked_add(len)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_land_at_the_offsets_their_pushes_return() {
        let mut p = Packed::default();
        assert_eq!(p.push(&[7, 8]), 0);
        assert_eq!(p.push_f32(&[1.5]), 2);
        assert_eq!(p.push_bytes(&[1, 0, 1, 1, 1]), 3);
        assert_eq!(p.push_i32(&[-1]), 5);
        assert_eq!(p.words(), &[7, 8, 1.5f32.to_bits(), 0x0101_0001, 1, u32::MAX]);
        assert_eq!(part(p.words(), 4, 2), Some(&[1, u32::MAX][..]));
        assert_eq!(part(p.words(), 5, 2), None);
    }
}
