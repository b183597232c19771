/**
 * Text a model wrote, shown as Markdown the way JupyterLab shows an untrusted notebook's
 * output: rendered by Lab's own Markdown renderer with `trusted: false`, so its HTML goes
 * through Lab's sanitizer (no scripts, no event handlers, no iframes, no `javascript:` links).
 * Without a rendermime registry it is plain text.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

export const MARKDOWN = 'text/markdown';

export function UntrustedMarkdown({
  text,
  rendermime
}: {
  text: string;
  rendermime: IRenderMimeRegistry | null;
}): JSX.Element {
  const host = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    if (!rendermime || !host.current) {
      return;
    }
    const renderer = rendermime.createRenderer(MARKDOWN);
    renderer.addClass('clarion-Markdown');
    void renderer.renderModel(new MimeModel({ data: { [MARKDOWN]: text }, trusted: false }));
    Widget.attach(renderer, host.current);
    return () => renderer.dispose();
  }, [text, rendermime]);
  if (!rendermime) {
    return <div className="clarion-ReplyText clarion-ReplyPlain">{text}</div>;
  }
  return <div className="clarion-ReplyText" ref={host} />;
}
