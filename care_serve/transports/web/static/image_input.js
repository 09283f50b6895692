// Where images come from: the file chooser, drag and drop, paste, or a camera snapshot.
// Each calls onImage(blob, description).

import { $ } from "./dom.js";

function firstImage(items) {
  for (const item of items || []) {
    const file = item instanceof File ? item : item.kind === "file" ? item.getAsFile() : null;
    if (file) return file;
  }
  return null;
}

function setupChooser(onImage) {
  const input = $("file-input");
  input.addEventListener("change", () => {
    const file = input.files && input.files[0];
    if (file) onImage(file, file.name);
    input.value = ""; // choosing the same file again runs again
  });
}

function setupDrop(onImage) {
  const zone = $("dropzone");
  const over = (on) => (event) => {
    event.preventDefault();
    zone.classList.toggle("dragging", on);
  };
  zone.addEventListener("dragenter", over(true));
  zone.addEventListener("dragover", over(true));
  zone.addEventListener("dragleave", over(false));
  zone.addEventListener("drop", (event) => {
    over(false)(event);
    const file = firstImage(event.dataTransfer && event.dataTransfer.files);
    if (file) onImage(file, file.name || "dropped image");
  });
  // A drop next to the zone must not navigate away from the page.
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => event.preventDefault());
}

function setupPaste(onImage) {
  document.addEventListener("paste", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement && target.type !== "file") return; // pasting text
    const file = firstImage(event.clipboardData && event.clipboardData.items);
    if (file) {
      event.preventDefault();
      onImage(file, "pasted image");
    }
  });
}

function setupCamera(onImage) {
  const button = $("camera-button");
  const hint = $("camera-hint");
  const dialog = $("camera-dialog");
  const video = $("camera-video");
  let stream = null;

  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    button.disabled = true;
    hint.hidden = false;
    hint.textContent =
      "The browser allows the camera only on https:// or http://localhost pages.";
    return;
  }

  const stop = () => {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    stream = null;
    video.srcObject = null;
  };
  dialog.addEventListener("close", stop);
  $("camera-cancel").addEventListener("click", () => dialog.close());

  button.addEventListener("click", async () => {
    hint.hidden = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "environment" },
        audio: false,
      });
    } catch (err) {
      hint.hidden = false;
      hint.textContent = `No camera: ${err.message || err.name}`;
      return;
    }
    video.srcObject = stream;
    dialog.showModal();
    $("snap-button").focus();
  });

  $("snap-button").addEventListener("click", () => {
    const width = video.videoWidth, height = video.videoHeight;
    if (!width || !height) return; // not playing yet
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").drawImage(video, 0, 0, width, height);
    canvas.toBlob(
      (blob) => {
        dialog.close();
        if (blob) onImage(blob, "camera snapshot");
      },
      "image/jpeg",
      0.92,
    );
  });
}

/** Wire every image source to `onImage(blob, description)`. */
export function setupImageInput(onImage) {
  setupChooser(onImage);
  setupDrop(onImage);
  setupPaste(onImage);
  setupCamera(onImage);
}
