// The exported site's engine (hierloc export --web): the page's two API calls answered in the
// page itself with onnxruntime-web, so a photo never leaves the machine. Photos are decoded by
// the browser (EXIF orientation applied), resized exactly as Pillow's bicubic resize does
// (two separable passes, 22-bit fixed-point weights, 8-bit between the passes), centre-cropped
// and normalised as the model's encoder expects (geolocator.json's "preprocess"), then the
// ONNX file runs the encoder, the query head and the beam search.
"use strict";

(function () {
  const BASE = "static/";
  let engine = null;

  async function start() {
    if (location.protocol === "file:") {
      throw new Error("open this page through a web server (python -m http.server -d SITE): " +
                      "browsers do not load WebAssembly modules from file://");
    }
    ort.env.wasm.wasmPaths = new URL(BASE, location.href).href;  // a URL: module imports need one
    ort.env.wasm.numThreads = 1;  // threads need cross-origin isolation a plain server lacks
    ort.env.wasm.proxy = false;
    const meta = await (await fetch(BASE + "geolocator.json")).json();
    const session = await ort.InferenceSession.create(BASE + "geolocator.onnx",
                                                      { executionProviders: ["wasm"] });
    return { meta, session };
  }

  // -- Pillow's resample (Resample.c), bicubic a = −0.5 -----------------------------------
  const PRECISION_BITS = 22;
  function cubic(x) {
    const a = -0.5;
    x = Math.abs(x);
    if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
    if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
    return 0;
  }
  function coeffs(inSize, outSize) {
    const scale = inSize / outSize;
    const filterscale = Math.max(1, scale);
    const support = 2 * filterscale;
    const ksize = Math.ceil(support) * 2 + 1;
    const bounds = new Int32Array(outSize * 2);
    const kk = new Float64Array(outSize * ksize);
    for (let xx = 0; xx < outSize; xx++) {
      const center = (xx + 0.5) * scale;
      const ss = 1 / filterscale;
      const xmin = Math.max(0, Math.trunc(center - support + 0.5));
      const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
      let ww = 0;
      for (let x = 0; x < xmax; x++) {
        const w = cubic((x + xmin - center + 0.5) * ss);
        kk[xx * ksize + x] = w;
        ww += w;
      }
      for (let x = 0; x < xmax; x++) {
        const v = ww !== 0 ? kk[xx * ksize + x] / ww : kk[xx * ksize + x];
        kk[xx * ksize + x] = Math.trunc(v < 0 ? -0.5 + v * (1 << PRECISION_BITS)
                                              : 0.5 + v * (1 << PRECISION_BITS));
      }
      bounds[2 * xx] = xmin;
      bounds[2 * xx + 1] = xmax;
    }
    return { ksize, bounds, kk };
  }
  function clip8(v) {
    const x = Math.floor(v / (1 << PRECISION_BITS));
    return x < 0 ? 0 : x > 255 ? 255 : x;
  }
  // src: RGB bytes (w × h × 3) → (nw × nh × 3), horizontal pass then vertical, as Pillow
  function resize(src, w, h, nw, nh) {
    const horiz = nw !== w, vert = nh !== h;
    let img = src, iw = w, ih = h;
    const cv = coeffs(h, nh);
    let first = 0, last = h;
    if (vert || horiz) {
      first = cv.bounds[0];
      last = cv.bounds[(nh - 1) * 2] + cv.bounds[(nh - 1) * 2 + 1];
    }
    if (horiz) {
      const ch = coeffs(w, nw);
      const rows = last - first;
      const out = new Uint8Array(nw * rows * 3);
      for (let y = 0; y < rows; y++) {
        const row = (y + first) * w * 3;
        for (let xx = 0; xx < nw; xx++) {
          const xmin = ch.bounds[2 * xx], xmax = ch.bounds[2 * xx + 1], k = xx * ch.ksize;
          let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
          for (let x = 0; x < xmax; x++) {
            const c = ch.kk[k + x], p = row + (x + xmin) * 3;
            s0 += img[p] * c; s1 += img[p + 1] * c; s2 += img[p + 2] * c;
          }
          const o = (y * nw + xx) * 3;
          out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
        }
      }
      img = out; iw = nw; ih = rows;
    } else if (vert) {  // Pillow reads only the rows the vertical pass needs
      img = src.subarray(first * w * 3, last * w * 3); ih = last - first;
    }
    if (!vert) return img;
    const out = new Uint8Array(iw * nh * 3);
    for (let yy = 0; yy < nh; yy++) {
      const ymin = cv.bounds[2 * yy] - first, ymax = cv.bounds[2 * yy + 1], k = yy * cv.ksize;
      for (let xx = 0; xx < iw; xx++) {
        let s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (let y = 0; y < ymax; y++) {
          const c = cv.kk[k + y], p = ((y + ymin) * iw + xx) * 3;
          s0 += img[p] * c; s1 += img[p + 1] * c; s2 += img[p + 2] * c;
        }
        const o = (yy * iw + xx) * 3;
        out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
      }
    }
    return out;
  }

  function roundHalfEven(x) {  // Python's round()
    const f = Math.floor(x), d = x - f;
    if (d > 0.5) return f + 1;
    if (d < 0.5) return f;
    return f % 2 === 0 ? f : f + 1;
  }

  // Preprocess.layout/array (hierloc.data.preprocess) on RGB bytes → (3, S, S) float32
  function preprocess(rgb, w, h, pre) {
    const size = pre.size;
    const ratio = size / pre.crop_pct;  // timm floors the shorter side, we round it
    const short = Math.max(1, pre.short_side === "floor" ? Math.floor(ratio) : roundHalfEven(ratio));
    const scale = short / Math.min(w, h);
    const cut = pre.long_side === "floor" ? Math.trunc : roundHalfEven;
    const square = pre.resize === "square";  // both sides to `short`, aspect not kept
    const nw = square ? short : Math.max(size, cut(w * scale));
    const nh = square ? short : Math.max(size, cut(h * scale));
    const left = Math.floor((nw - size) / 2), top = Math.floor((nh - size) / 2);
    const img = resize(rgb, w, h, nw, nh);
    const out = new Float32Array(3 * size * size);
    const f = Math.fround;
    for (let c = 0; c < 3; c++) {
      const m = f(pre.mean[c]), s = f(pre.std[c]);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          const v = img[((y + top) * nw + x + left) * 3 + c];
          out[c * size * size + y * size + x] = f(f(f(v / 255) - m) / s);
        }
      }
    }
    return out;
  }

  // the browser's decoder, EXIF orientation applied; alpha composited on white
  async function decode(file) {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext("2d", { colorSpace: "srgb" });
    ctx.drawImage(bitmap, 0, 0);
    const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height,
                                  { colorSpace: "srgb" }).data;
    const rgb = new Uint8Array(bitmap.width * bitmap.height * 3);
    for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
      const a = rgba[i + 3];
      for (let c = 0; c < 3; c++) {
        rgb[j + c] = a === 255 ? rgba[i + c] : Math.round((rgba[i + c] * a + 255 * (255 - a)) / 255);
      }
    }
    return { rgb, w: bitmap.width, h: bitmap.height };
  }

  // EXIF GPS of a JPEG (APP1 "Exif", TIFF, GPS IFD tags 1–4), or null
  function exifGps(buf) {
    const v = new DataView(buf);
    if (v.byteLength < 4 || v.getUint16(0) !== 0xffd8) return null;
    let p = 2;
    while (p + 4 < v.byteLength) {
      const marker = v.getUint16(p), len = v.getUint16(p + 2);
      if (marker === 0xffe1 && v.getUint32(p + 4) === 0x45786966) return tiffGps(v, p + 10);
      if ((marker & 0xff00) !== 0xff00 || marker === 0xffda) return null;
      p += 2 + len;
    }
    return null;
  }
  function tiffGps(v, t) {
    try {
      const le = v.getUint16(t) === 0x4949;
      const u16 = (o) => v.getUint16(t + o, le), u32 = (o) => v.getUint32(t + o, le);
      const find = (ifd, tag) => {
        const n = u16(ifd);
        for (let i = 0; i < n; i++) if (u16(ifd + 2 + 12 * i) === tag) return ifd + 2 + 12 * i;
        return null;
      };
      const gpsEntry = find(u32(4), 0x8825);
      if (gpsEntry === null) return null;
      const gps = u32(gpsEntry + 8);
      const ref = (tag) => { const e = find(gps, tag); return e === null ? "" : String.fromCharCode(v.getUint8(t + e + 8)); };
      const dms = (tag) => {
        const e = find(gps, tag);
        if (e === null) return null;
        const off = u32(e + 8);
        let deg = 0;
        for (let i = 0; i < 3; i++) {
          const num = u32(off + 8 * i), den = u32(off + 8 * i + 4);
          if (den === 0) return null;
          deg += num / den / [1, 60, 3600][i];
        }
        return deg;
      };
      let lat = dms(2), lon = dms(4);
      const latRef = ref(1), lonRef = ref(3);
      if (lat === null || lon === null || !"NS".includes(latRef) || !"EW".includes(lonRef) ||
          !latRef || !lonRef) return null;
      if (latRef === "S") lat = -lat;
      if (lonRef === "W") lon = -lon;
      if (Math.abs(lat) > 90 || Math.abs(lon) > 180) return null;
      return { latitude: lat, longitude: lon };
    } catch (e) { return null; }
  }

  function haversineKm(lat1, lon1, lat2, lon2) {  // R = 6371 km, as hierloc's metrics
    const r = Math.PI / 180, dp = (lat2 - lat1) * r, dl = (lon2 - lon1) * r;
    const a = Math.sin(dp / 2) ** 2 + Math.cos(lat1 * r) * Math.cos(lat2 * r) * Math.sin(dl / 2) ** 2;
    return 2 * 6371 * Math.atan2(Math.sqrt(Math.min(1, a)), Math.sqrt(Math.max(0, 1 - a)));
  }

  // one photo → its entry of the predictions document, or a reject
  async function locateOne(file, index, topK) {
    const { meta, session } = engine;
    const id = file.name.replace(/\.[^.]*$/, "") || "photo" + (index + 1);
    let image;
    try { image = await decode(file); }
    catch (e) { return { rejected: { id, file: file.name, index, reason: "not an image (the browser cannot decode it)" } }; }
    const gps = exifGps(await file.arrayBuffer());
    const size = meta.preprocess.size;
    const pixels = preprocess(image.rgb, image.w, image.h, meta.preprocess);
    const out = await session.run({ pixels: new ort.Tensor("float32", pixels, [1, 3, size, size]) });
    const W = meta.width, L = meta.levels.length;
    const paths = out.paths.data, scores = out.scores.data, coords = out.coordinates.data;
    const conf = out.confidences.data;
    const answers = [];
    for (let j = 0; j < Math.min(topK, W); j++) {
      const rows = [];
      for (let lv = 0; lv < L; lv++) rows.push(Number(paths[j * L + lv]));
      if (rows.some((r) => r < 0)) break;
      const places = rows.map((r, lv) => {
        const t = meta.levels[lv];
        return { level: t.level, id: t.ids[r], name: t.names[r], latitude: t.latitude[r],
                 longitude: t.longitude[r], confidence: conf[j * L + lv] };
      });
      const a = { rank: j + 1, latitude: coords[2 * j], longitude: coords[2 * j + 1],
                  score: scores[j], confidence: conf[j * L + L - 1], places };
      if (gps) a.error_km = haversineKm(gps.latitude, gps.longitude, a.latitude, a.longitude);
      answers.push(a);
    }
    return { result: { id, file: file.name, index, answers, exif_gps: gps } };
  }

  async function api(path, options) {
    try {
      if (engine === null) engine = await start();
    } catch (e) {
      return { status: 500, body: { error: "the model could not be loaded: " + e.message } };
    }
    if (path === "/v1/models") {
      return { status: 200, body: {
        models: [{ name: "geolocator", family: "hierloc", encoder: engine.meta.encoder && engine.meta.encoder.name }],
        limits: { max_photos: 16 } } };
    }
    const form = options.body;
    const topK = Math.max(1, Math.min(engine.meta.width, parseInt(form.get("top_k"), 10) || 5));
    const files = form.getAll("photos");
    const results = [], rejected = [];
    for (let i = 0; i < files.length; i++) {
      const r = await locateOne(files[i], i, topK);
      if (r.result) results.push(r.result); else rejected.push(r.rejected);
    }
    const body = { format: "hierloc-predictions", version: 1, model: "geolocator", top_k: topK,
                   beam: engine.meta.width, results, rejected };
    window.hierlocLocal.last = body;  // the latest document, for anyone checking the page
    return { status: 200, body };
  }

  window.hierlocLocal = { api, last: null };
})();
