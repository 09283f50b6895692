// Showing the server's error (type and message) in an alert box.

/** Show `err` (an ApiError or any Error) in the alert box with id `id`. */
export function showError(id, err) {
  const box = document.getElementById(id);
  const status = err.status ? `Error ${err.status}` : "Error";
  box.querySelector(".error-title").textContent = `${status} · ${err.type || err.name}`;
  box.querySelector(".error-message").textContent = err.message;
  box.hidden = false;
}

export function hideError(id) {
  document.getElementById(id).hidden = true;
}
