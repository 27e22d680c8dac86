//! G.711 as FLAC (RFC 9639), in process: browsers' MSE and HLS fMP4 take
//! FLAC in MP4 and not G.711, and 8 kHz mono costs next to nothing to
//! re-wrap losslessly. go2rtc does the same for its MSE.
//!
//! FOUNDATION STUB (issue 16): being written.
