// Class colours: the PASCAL VOC palette, exactly as service/postprocess/segmentation.py's
// make_palette (class 0 black = background). Detection class i uses colour i + 1, as the
// server's overlay PNGs do (service/postprocess/drawing.py).

/** The colour [r, g, b] of segmentation class `c`. */
export function classColour(c) {
  let r = 0, g = 0, b = 0, label = c;
  for (let shift = 7; shift >= 0; shift -= 1) {
    r |= (label & 1) << shift;
    g |= ((label >> 1) & 1) << shift;
    b |= ((label >> 2) & 1) << shift;
    label >>= 3;
  }
  return [r, g, b];
}

/** The colour of detection class `c` (the palette without its background entry). */
export function detectionColour(c) {
  return classColour(c + 1);
}

/** CSS text of a colour. */
export function css([r, g, b]) {
  return `rgb(${r}, ${g}, ${b})`;
}

/** Black or white, whichever contrasts more with `colour` (WCAG relative luminance). */
export function textOn(colour) {
  const [r, g, b] = colour.map((v) => {
    const c = v / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const l = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return 1.05 / (l + 0.05) >= (l + 0.05) / 0.05 ? "#fff" : "#000";
}
