// The paper's colours, shared by every page: a value t in [-1, 1] is red at -1, white at 0 and
// blue at +1 (tanh(c), h, candidates; gates in [0, 1] are mapped onto it by the caller). The
// letter colour is black or white, whichever contrasts more with the background (WCAG relative
// luminance), so that text on a saturated cell stays readable.
function cellRgb(t) {
  t = Math.max(-1, Math.min(1, Number.isFinite(t) ? t : 0));
  if (t < 0) { const v = Math.round(255 * (1 + t)); return [255, v, v]; }
  const v = Math.round(255 * (1 - t)); return [v, v, 255];
}
function luminance(rgb) {
  const lin = rgb.map(c => { c /= 255; return c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); });
  return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2];
}
function letterFor(rgb) {  // contrast with black is (L + 0.05) / 0.05, with white 1.05 / (L + 0.05)
  const L = luminance(rgb);
  return (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000" : "#fff";
}
function paintValue(el, t) {
  const rgb = cellRgb(t);
  el.style.backgroundColor = `rgb(${rgb[0]},${rgb[1]},${rgb[2]})`;
  el.style.color = letterFor(rgb);
}
