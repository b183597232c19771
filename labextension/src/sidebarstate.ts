/**
 * What the sidebar shows: its tab and the workflow or agent whose form is open. Commands
 * (the palette, the file browser's context menu) set it as a click in the sidebar would.
 */
import { ISignal, Signal } from '@lumino/signaling';

export type Tab = 'workflows' | 'runs' | 'agents';

export class SidebarState {
  tab: Tab = 'runs';
  /** The workflow (Workflows tab) or agent (Agents tab) whose form is open. */
  open: string | null = null;
  /** Counts the requests to open a form: a form asked for again starts afresh (the files selected now). */
  requests = 0;
  /** Counts the requests to import v2 agents: each opens the file chooser once. */
  imports = 0;
  private _changed = new Signal<this, void>(this);

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  show(tab: Tab, open: string | null = null): void {
    this.tab = tab;
    this.open = open;
    this.requests++;
    this._changed.emit();
  }

  toggle(tab: Tab, id: string): void {
    this.show(tab, this.tab === tab && this.open === id ? null : id);
  }

  requestImport(): void {
    this.tab = 'agents';
    this.imports++;
    this._changed.emit();
  }
}
