export function mount(element) {
  element.textContent = "todo";
  element.dataset.ready = "true";
  return () => {};
}
